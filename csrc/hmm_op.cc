/* hmm_op: the stateful MXNet operators `hmm_forward` and `hmm_forward_dense`
 * (and their model axis: hmm_forward_many, hmm_forward_by_model,
 * hmm_forward_dense_many, hmm_forward_dense_by_model; see below),
 * through MXNet's extension library API (include/mxnet/lib_api.h,
 * MX_LIBRARY_VERSION 11, MXNet 1.9.x).
 *
 *     mx.library.load(path_to_libhmmop_op_so, verbose=False)
 *     ll = mx.nd.hmm_forward(A, B, pi, obs)        # also mx.sym / F.hmm_forward
 *     ll = mx.nd.hmm_forward_dense(A, pi, log_emission, lengths)
 *
 * The contract is the CustomOp's (hmmop/op.py): A (N, N), B (N, M), pi (N,) of
 * one dtype, float32 or float64; obs (T,) or (batch, T) of int32, int64,
 * float32 or float64 holding symbols in [0, M), -2 for a missing observation,
 * rows padded at the end with -1; ll (batch,) - (1,) for 1-D obs - of A's
 * dtype.  Backward: the gradients of sum_b dll[b] * ll[b] with respect to A, B
 * and pi, a zero gradient for obs.  hmm_forward_dense's contract (the
 * CustomOp's of hmmop/dense.py) is given where it is defined, below.
 *
 * This file only adapts MXNet's calling convention: the work is done by the C
 * batch driver (hmm_batch.h), the same code the Cython extension calls, so
 * both give bit-identical results when compiled with the same flags.
 *
 * Limits of lib_api that the Python side must work around:
 * - Gradient requests: lib_api never tells the operator what MXNet asked for
 *   (null, write, add); Backward can only overwrite its outputs.  Where MXNet
 *   asks for kAddTo (grad_req='add', or gradients summed in place in a bound
 *   graph) the result would be wrong, so hmmop only feeds either op through
 *   an identity-like op that owns the gradient (see hmmop/native.py).
 * - Error messages: lib_api.cc keeps every message in a list that it never
 *   clears and that MXNet reads back (whole) after every call; see
 *   ErrorList below for how this library keeps that list empty.
 * - Threads: hmmop.get_num_threads()'s rule: hmmop.set_num_threads()'s value
 *   (passed on by hmmop.native), else OMP_NUM_THREADS's first entry, else the
 *   processors available.
 */
#include <mxnet/lib_api.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

extern "C" {
#include "hmm_batch.h"
#include "hmm_many.h"
}

using mxnet::ext::CustomStatefulOp;
using mxnet::ext::MXContext;
using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;

namespace {

/* ---- Error messages ---------------------------------------------------------
 *
 * lib_api.cc's MXerrorMsgs is a vector of messages that only grows: after a
 * failing call, MXNet reads every message in it into the error, and it reads
 * them (building one string per message, which it never frees) after every
 * successful call too.  So 1000 failures made each error 1000 messages long
 * and every later call of the library slower.
 *
 * This library keeps the list empty instead.  The vector is private to
 * MXerrorMsgs; the explicit instantiation below is the standard C++ way to
 * name a private member (access is not checked in explicit instantiations).
 * The list is changed only under a mutex, and never reallocated (capacity is
 * reserved once), since MXNet reads it without a lock:
 * - a failing call replaces whatever is in the list by its one message;
 * - each entry of this library first removes the messages that MXNet has
 *   surely read: those added by the same thread (MXNet reads them in that
 *   thread, right after the failing call returned) and those older than a
 *   second.
 * Removed messages are not freed at once (a reader in another thread may still
 * hold one) but after many more removals. */
using MsgList = std::vector<std::stringstream *>;
struct MsgsMember {
    using type = MsgList mxnet::ext::MXerrorMsgs::*;
};
template <class Tag, typename Tag::type Member>
struct Expose {
    friend typename Tag::type member_of(Tag) { return Member; }
};
template struct Expose<MsgsMember, &mxnet::ext::MXerrorMsgs::messages>;
MsgsMember::type member_of(MsgsMember);

class ErrorList {
 public:
    static ErrorList &get()
    {
        static ErrorList inst;
        return inst;
    }

    /* Removes the messages MXNet has read (see above); cheap when none. */
    void sweep()
    {
#ifdef HMMOP_KEEP_ERRORS
        return;
#endif
        std::lock_guard<std::mutex> lock(mutex_);
        MsgList &msgs = list();
        if (msgs.empty())
            return;
        const auto now = std::chrono::steady_clock::now();
        const auto self = std::this_thread::get_id();
        size_t kept = 0;
        for (size_t i = 0; i < msgs.size(); ++i) {
            std::stringstream *s = msgs[i];
            auto it = meta_.find(s);
            if (it == meta_.end())      /* added by lib_api itself: age it from now */
                it = meta_.emplace(s, Meta{std::thread::id(), now}).first;
            const bool read = it->second.thread == self ||
                              now - it->second.when > std::chrono::seconds(1);
            if (read) {
                meta_.erase(it);
                retire(s);
            } else {
                msgs[kept++] = s;
            }
        }
        msgs.resize(kept);
    }

    /* The message of a failing call: the only one in the list. */
    void set(const std::string &text)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        MsgList &msgs = list();
        for (std::stringstream *s : msgs) {
            meta_.erase(s);
            retire(s);
        }
        msgs.clear();
        auto *s = new std::stringstream();
        *s << text;
        meta_.emplace(s, Meta{std::this_thread::get_id(), std::chrono::steady_clock::now()});
        msgs.push_back(s);
    }

    size_t size()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return list().size();
    }

 private:
    struct Meta {
        std::thread::id thread;
        std::chrono::steady_clock::time_point when;
    };

    ErrorList() { list().reserve(kCapacity); }

    static MsgList &list() { return mxnet::ext::MXerrorMsgs::get()->*member_of(MsgsMember()); }

    void retire(std::stringstream *s)
    {
        retired_.push_back(s);
        while (retired_.size() > kRetired) {
            delete retired_.front();
            retired_.pop_front();
        }
    }

    static const size_t kCapacity = 4096;
    static const size_t kRetired = 256;
    std::mutex mutex_;
    std::unordered_map<std::stringstream *, Meta> meta_;
    std::deque<std::stringstream *> retired_;
};

const char kForward[] = "hmm_forward";
const char kDense[] = "hmm_forward_dense";

/* A failing call of operator op: its one message, "op: text". */
MXReturnValue fail_in(const char *op, const std::string &text)
{
#ifdef HMMOP_KEEP_ERRORS     /* lib_api's own behaviour, to measure the trap it avoids */
    MX_ERROR_MSG << op << ": " << text;
#else
    ErrorList::get().set(op + std::string(": ") + text);
#endif
    return MX_FAIL;
}

MXReturnValue fail(const std::string &text) { return fail_in(kForward, text); }
MXReturnValue fail_dense(const std::string &text) { return fail_in(kDense, text); }

/* ---- Names and formatting, as the Python checks write them ----------------- */

const char *dtype_name(int code)
{
    switch (code) {
    case 0: return "float32";
    case 1: return "float64";
    case 2: return "float16";
    case 3: return "uint8";
    case 4: return "int32";
    case 5: return "int8";
    case 6: return "int64";
    case 7: return "bool";
    case 8: return "int16";
    case 9: return "uint16";
    case 10: return "uint32";
    case 11: return "uint64";
    case 12: return "bfloat16";
    default: return "unknown";
    }
}

/* MXNet 1.x marks an unknown dimension by 0 (legacy shapes) or -1; both reach
 * the library as unsigned. */
const unsigned kUnknown = 0;
bool known(unsigned d) { return d != 0 && d < 0x80000000u; }

/* Every unknown dimension of the inputs' shapes as kUnknown. */
void mark_unknown(std::vector<std::vector<unsigned>> *in)
{
    for (auto &s : *in)
        for (unsigned &d : s)
            if (!known(d))
                d = kUnknown;
}

/* Folds the known ones of dims into *d (kUnknown while none is); false where two known ones differ. */
bool agree(std::initializer_list<unsigned> dims, unsigned *d)
{
    for (unsigned x : dims)
        if (known(x)) {
            if (known(*d) && x != *d)
                return false;
            *d = x;
        }
    return true;
}

std::string shape_str(const std::vector<unsigned> &s)
{
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) {
        if (i)
            out += ", ";
        out += known(s[i]) ? std::to_string(s[i]) : std::string("?");
    }
    if (s.size() == 1)
        out += ",";
    return out + ")";
}

std::string shape_str(const std::vector<int64_t> &s)
{
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i)
        out += (i ? ", " : "") + std::to_string(s[i]);
    if (s.size() == 1)
        out += ",";
    return out + ")";
}

/* Python's repr of a float: the shortest form that reads back the same. */
template <typename F>
std::string float_repr(F v)
{
    if (std::isnan(v))
        return "nan";
    if (std::isinf(v))
        return v > 0 ? "inf" : "-inf";
    char buf[64];
    for (int prec = 1; prec <= 17; ++prec) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, static_cast<double>(v));
        if (static_cast<F>(std::strtod(buf, nullptr)) == v)
            break;
    }
    std::string s = buf;
    if (s.find_first_of(".en") == std::string::npos)
        s += ".0";
    return s;
}

/* ---- Threads: hmmop.threads.get_num_threads() ------------------------------ */

std::atomic<int> thread_override(0);      /* hmmop.set_num_threads(n); 0: none */

int num_threads()
{
    const int n = thread_override.load(std::memory_order_relaxed);
    if (n > 0)
        return n;
    const char *env = std::getenv("OMP_NUM_THREADS");
    if (env) {
        std::string first(env);
        first = first.substr(0, first.find(','));
        size_t a = first.find_first_not_of(" \t\n\r\f\v");
        size_t b = first.find_last_not_of(" \t\n\r\f\v");
        if (a != std::string::npos) {
            first = first.substr(a, b - a + 1);
            bool digits = !first.empty() && first.size() < 10;
            for (char c : first)
                digits = digits && c >= '0' && c <= '9';
            if (digits && std::atoi(first.c_str()) > 0)
                return std::atoi(first.c_str());
        }
    }
    return omp_get_num_procs();
}

/* ---- Shape and type inference ---------------------------------------------- */

MXReturnValue parse_attrs(const std::unordered_map<std::string, std::string> &attrs,
                          int *num_in, int *num_out)
{
    ErrorList::get().sweep();
    *num_in = 4;
    *num_out = 1;
    return MX_SUCCESS;
}

MXReturnValue infer_type(const std::unordered_map<std::string, std::string> &attrs,
                         std::vector<int> *in, std::vector<int> *out)
{
    ErrorList::get().sweep();
    std::vector<int> &t = *in;
    /* Unknown parameter dtypes: the first known one, else float32 (as the CustomOp). */
    int param = -1;
    for (int i = 0; i < 3 && param < 0; ++i)
        if (t[i] >= 0)
            param = t[i];
    if (param < 0)
        param = 0;
    for (int i = 0; i < 3; ++i)
        if (t[i] < 0)
            t[i] = param;
    if (t[3] < 0)
        t[3] = 0;
    static const char *names[3] = {"A", "B", "pi"};
    for (int i = 0; i < 3; ++i)
        if (t[i] != 0 && t[i] != 1)
            return fail(std::string(names[i]) + " has dtype " + dtype_name(t[i]) +
                        "; A, B and pi must be float32 or float64");
    if (t[0] != t[1] || t[0] != t[2])
        return fail(std::string("A, B and pi must share one dtype, got A: ") + dtype_name(t[0]) +
                    ", B: " + dtype_name(t[1]) + ", pi: " + dtype_name(t[2]));
    if (t[3] != 0 && t[3] != 1 && t[3] != 4 && t[3] != 6)
        return fail(std::string("obs has dtype ") + dtype_name(t[3]) +
                    "; expected int32, int64, float32 or float64 holding integer symbols");
    (*out)[0] = t[0];
    return MX_SUCCESS;
}

/* Checks what is known of the shapes and fills in what follows from it: N
 * from any of A, B, pi; the output (batch,) from obs.  An unknown shape
 * (empty) or dimension (0) is left for later passes, never an error. */
MXReturnValue infer_shape(const std::unordered_map<std::string, std::string> &attrs,
                          std::vector<std::vector<unsigned>> *in,
                          std::vector<std::vector<unsigned>> *out)
{
    ErrorList::get().sweep();
    std::vector<unsigned> &A = (*in)[0], &B = (*in)[1], &pi = (*in)[2], &obs = (*in)[3];
    mark_unknown(in);
    if (!A.empty() && A.size() != 2)
        return fail("A must be a square (N, N) transition matrix, got shape " + shape_str(A));
    if (!B.empty() && B.size() != 2)
        return fail("B must have shape (N, M) with one row per state of A, got shape " +
                    shape_str(B));
    if (!pi.empty() && pi.size() != 1)
        return fail("pi must have shape (N,), got shape " + shape_str(pi));
    if (!obs.empty() && obs.size() > 2)
        return fail("obs must have shape (T,) or (batch, T), got shape " + shape_str(obs) +
                    " (rank " + std::to_string(obs.size()) + ")");
    if (A.size() == 2 && known(A[0]) && known(A[1]) && A[0] != A[1])
        return fail("A must be a square (N, N) transition matrix, got shape " + shape_str(A));
    /* N: from A, else B's rows, else pi. */
    unsigned n = kUnknown;
    if (A.size() == 2)
        n = known(A[0]) ? A[0] : A[1];
    if (!known(n) && B.size() == 2)
        n = B[0];
    if (!known(n) && pi.size() == 1)
        n = pi[0];
    if (known(n)) {
        if (A.size() == 2 && ((known(A[0]) && A[0] != n) || (known(A[1]) && A[1] != n)))
            return fail("A must be a square (N, N) transition matrix, got shape " + shape_str(A));
        if (B.size() == 2 && known(B[0]) && B[0] != n)
            return fail("B must have shape (N, M) = (" + std::to_string(n) +
                        ", M) with one row per state of A, got shape " + shape_str(B));
        if (pi.size() == 1 && known(pi[0]) && pi[0] != n)
            return fail("pi must have shape (N,) = (" + std::to_string(n) + ",), got shape " +
                        shape_str(pi));
        A = {n, n};
        pi = {n};
        if (B.empty())
            B = {n, kUnknown};
        else
            B[0] = n;
    }
    if (obs.size() == 1)
        (*out)[0] = {1};
    else if (obs.size() == 2)
        (*out)[0] = {obs[0]};
    else
        (*out)[0] = {kUnknown};
    return MX_SUCCESS;
}

/* ---- Observations: hmmop._kernel.prepare_obs ------------------------------- */

/* obs32 (batch, T) int32: symbols, n_symbols for -2 (missing), -1 padding;
 * lengths (batch,).  Returns "" or the error (naming obs[b, t]). */
template <typename O>
std::string prepare_obs(const O *obs, int64_t batch, int64_t T, int64_t m,
                        std::vector<int32_t> *obs32, std::vector<int64_t> *lengths)
{
    const bool is_float = !std::numeric_limits<O>::is_integer;
    obs32->resize(static_cast<size_t>(batch * T));
    lengths->resize(static_cast<size_t>(batch));
    int32_t *o = obs32->data();
    for (int64_t b = 0; b < batch; ++b) {
        const O *row = obs + b * T;
        int64_t L = T;
        int kind = 0;
        int64_t t = 0;
        for (; t < T; ++t) {
            const double v = static_cast<double>(row[t]);
            if (is_float && !(v == std::floor(v))) {
                kind = 1;
            } else if (0 <= v && v < static_cast<double>(m)) {
                o[b * T + t] = static_cast<int32_t>(v);
                continue;
            } else if (v == -2) {
                o[b * T + t] = static_cast<int32_t>(m);
                continue;
            } else if (v == -1) {
                L = t;
                break;
            } else {
                kind = 2;
            }
            break;
        }
        if (!kind) {
            for (t = L; t < T; ++t) {
                if (row[t] != static_cast<O>(-1)) {
                    kind = 3;
                    break;
                }
                o[b * T + t] = -1;
            }
        }
        if (kind) {
            /* as the Cython check prints it: a float32 value as the double it is */
            std::string value = is_float ? float_repr(static_cast<double>(row[t]))
                                         : std::to_string(static_cast<long long>(row[t]));
            std::string where = "obs[" + std::to_string(b) + ", " + std::to_string(t) + "] = " +
                                value;
            if (kind == 1)
                return where + " is not an integer: obs must hold integer symbols "
                               "(int32, int64, or floats with integral values)";
            if (kind == 2)
                return where + " is not a valid symbol: expected an integer in [0, " +
                       std::to_string(m) + ") (B has " + std::to_string(m) +
                       " symbol columns), -1 padding or -2 missing";
            return where + " follows -1 padding in row " + std::to_string(b) +
                   ": padding must only fill the end of a row";
        }
        (*lengths)[b] = L;
    }
    return "";
}

/* ---- The stateful operator ------------------------------------------------- */

template <typename R>
void store(MXTensor &dst, const double *src)
{
    R *d = dst.data<R>();
    const int64_t size = dst.size();
    for (int64_t i = 0; i < size; ++i)
        d[i] = static_cast<R>(src[i]);
}

/* src (double) into dst, of dtype float32 or float64 (ll, the parameters' gradients). */
void store_as(MXTensor &dst, int dtype, const double *src)
{
    if (dtype == mxnet::ext::kFloat32)
        store<float>(dst, src);
    else
        store<double>(dst, src);
}

/* The output gradient dll (float32 or float64) as double; "" or the error. */
std::string read_head(MXTensor &dll, size_t batch, std::vector<double> *g64)
{
    if (static_cast<size_t>(dll.size()) != batch)
        return "the output gradient has " + std::to_string(dll.size()) + " elements, expected " +
               std::to_string(batch);
    g64->resize(batch);
    for (size_t b = 0; b < batch; ++b)
        (*g64)[b] = dll.dtype == mxnet::ext::kFloat32 ? dll.data<float>()[b]
                                                       : dll.data<double>()[b];
    return "";
}

/* The zero gradient of an integer-valued input (obs, lengths), where asked for. */
void zero_grad(MXTensor &g)
{
    if (!g.data_ptr)
        return;
    const bool four = g.dtype == mxnet::ext::kInt32 || g.dtype == mxnet::ext::kFloat32;
    std::memset(g.data_ptr, 0, static_cast<size_t>(g.size()) * (four ? 4 : 8));
}

class HMMForwardOp : public CustomStatefulOp {
 public:
    ~HMMForwardOp() override { hmm_batch_free(plan_); }

    MXReturnValue Forward(std::vector<MXTensor> *inputs, std::vector<MXTensor> *outputs,
                          const OpResource &res) override
    {
        ErrorList::get().sweep();
        hmm_batch_free(plan_);
        plan_ = nullptr;
        MXTensor &A = (*inputs)[0], &B = (*inputs)[1], &pi = (*inputs)[2], &obs = (*inputs)[3];
        MXTensor &ll = (*outputs)[0];
        if (A.shape.size() != 2 || B.shape.size() != 2 || pi.shape.size() != 1 ||
            obs.shape.size() < 1 || obs.shape.size() > 2)
            return fail("inputs of unexpected ranks: A " + shape_str(A.shape) + ", B " +
                        shape_str(B.shape) + ", pi " + shape_str(pi.shape) + ", obs " +
                        shape_str(obs.shape));
        const int64_t n = A.shape[0], m = B.shape[1];
        const int64_t batch = obs.shape.size() == 1 ? 1 : obs.shape[0];
        const int64_t T = obs.shape.back();
        if (n < 1 || m < 1 || A.shape[1] != n || B.shape[0] != n || pi.shape[0] != n)
            return fail("A (N, N), B (N, M), pi (N,) with N, M >= 1 expected, got A " +
                        shape_str(A.shape) + ", B " + shape_str(B.shape) + ", pi " +
                        shape_str(pi.shape));
        if (batch < 1 || T < 1)
            return fail("obs must hold at least one row and one time step, got shape " +
                        shape_str(obs.shape) + " (pad empty sequences with -1 instead)");
        if (n > 0x7fffffff || m >= 0x7fffffff)
            return fail("too many states or symbols");
        std::string err;
        switch (obs.dtype) {
        case mxnet::ext::kInt32:
            err = prepare_obs(obs.data<int32_t>(), batch, T, m, &obs32_, &lengths_);
            break;
        case mxnet::ext::kInt64:
            err = prepare_obs(obs.data<int64_t>(), batch, T, m, &obs32_, &lengths_);
            break;
        case mxnet::ext::kFloat32:
            err = prepare_obs(obs.data<float>(), batch, T, m, &obs32_, &lengths_);
            break;
        case mxnet::ext::kFloat64:
            err = prepare_obs(obs.data<double>(), batch, T, m, &obs32_, &lengths_);
            break;
        default:
            return fail(std::string("obs has dtype ") + dtype_name(obs.dtype) +
                        "; expected int32, int64, float32 or float64 holding integer symbols");
        }
        if (!err.empty())
            return fail(err);
        if (A.dtype != B.dtype || A.dtype != pi.dtype || A.dtype != ll.dtype ||
            (A.dtype != mxnet::ext::kFloat32 && A.dtype != mxnet::ext::kFloat64))
            return fail("A, B, pi and ll must share one dtype, float32 or float64");
        dtype_ = A.dtype;
        const int dt = dtype_ == mxnet::ext::kFloat32 ? HMM_FLOAT32 : HMM_FLOAT64;
        n_ = static_cast<int>(n);
        m_ = static_cast<int>(m);
        plan_ = hmm_batch_new(n_, m_, batch, T, obs32_.data(), lengths_.data(), dt);
        if (!plan_)
            return fail("no memory for the batch plan");
        ll64_.assign(static_cast<size_t>(batch), 0.0);
        if (hmm_batch_forward(plan_, A.data_ptr, B.data_ptr, pi.data_ptr, ll64_.data(),
                              std::max(1, num_threads())) != 0)
            return fail("no memory for the forward pass");
        if (ll.size() != batch)
            return fail("ll has " + std::to_string(ll.size()) + " elements, expected " +
                        std::to_string(batch));
        store_as(ll, dtype_, ll64_.data());
        return MX_SUCCESS;
    }

    /* inputs: dll, A, B, pi, obs, ll; outputs: dA, dB, dpi, dobs, always
     * overwritten (lib_api passes no gradient request). */
    MXReturnValue Backward(std::vector<MXTensor> *inputs, std::vector<MXTensor> *outputs,
                           const OpResource &res) override
    {
        ErrorList::get().sweep();
        if (!plan_)
            return fail("backward without a successful forward");
        const std::string err = read_head((*inputs)[0], ll64_.size(), &g64_);
        if (!err.empty())
            return fail(err);
        const size_t n = n_, m = m_;
        grads_.assign(n * n + n * m + n, 0.0);
        double *dA = grads_.data(), *dB = dA + n * n, *dpi = dB + n * m;
        if (hmm_batch_backward(plan_, g64_.data(), dA, dB, dpi, std::max(1, num_threads())) != 0)
            return fail("no memory for the backward pass");
        const double *src[3] = {dA, dB, dpi};
        for (int i = 0; i < 3; ++i) {
            if ((*outputs)[i].data_ptr)        /* none where not asked for (grad_req 'null') */
                store_as((*outputs)[i], dtype_, src[i]);
        }
        zero_grad((*outputs)[3]);
        return MX_SUCCESS;
    }

 private:
    hmm_batch *plan_ = nullptr;
    int n_ = 0, m_ = 0;
    int dtype_ = 0;
    std::vector<int32_t> obs32_;     /* read by plan_ until it is freed */
    std::vector<int64_t> lengths_;   /* likewise */
    std::vector<double> ll64_, g64_, grads_;
};

MXReturnValue create_state(const std::unordered_map<std::string, std::string> &attrs,
                           const MXContext &ctx,
                           const std::vector<std::vector<unsigned int>> &in_shapes,
                           const std::vector<int> in_types, CustomStatefulOp **op)
{
    ErrorList::get().sweep();
    *op = CustomStatefulOp::create<HMMForwardOp>();
    return MX_SUCCESS;
}

/* ---- hmm_forward_dense ------------------------------------------------------
 *
 * A (N, N), pi (N,), log_emission (batch, T, N) of one dtype, float32 or
 * float64; lengths (batch,) of int32, int64, float32 or float64 holding
 * integers in [0, T]; ll (batch,) of A's dtype.  Sequence b is the first
 * lengths[b] rows of log_emission[b] (starts[b] = b * T in the driver's
 * terms).  Backward: dA, dpi, dlog_emission (the posteriors times dll, 0 in
 * the padding), a zero gradient for lengths.  The messages are those of
 * hmmop.checks' check_dense_* and prepare_lengths. */

MXReturnValue infer_type_dense(const std::unordered_map<std::string, std::string> &attrs,
                               std::vector<int> *in, std::vector<int> *out)
{
    ErrorList::get().sweep();
    std::vector<int> &t = *in;
    /* As the CustomOp: unknown float dtypes from the first known one, else float32;
     * lengths int64. */
    int param = -1;
    for (int i = 0; i < 3 && param < 0; ++i)
        if (t[i] >= 0)
            param = t[i];
    if (param < 0)
        param = 0;
    for (int i = 0; i < 3; ++i)
        if (t[i] < 0)
            t[i] = param;
    if (t[3] < 0)
        t[3] = mxnet::ext::kInt64;
    static const char *names[3] = {"A", "pi", "log_emission"};
    for (int i = 0; i < 3; ++i)
        if (t[i] != 0 && t[i] != 1)
            return fail_dense(std::string(names[i]) + " has dtype " + dtype_name(t[i]) +
                              "; A, pi and log_emission must be float32 or float64");
    if (t[0] != t[1] || t[0] != t[2])
        return fail_dense(std::string("A, pi and log_emission must share one dtype, got A: ") +
                          dtype_name(t[0]) + ", pi: " + dtype_name(t[1]) +
                          ", log_emission: " + dtype_name(t[2]));
    if (t[3] != 0 && t[3] != 1 && t[3] != 4 && t[3] != 6)
        return fail_dense(std::string("lengths has dtype ") + dtype_name(t[3]) +
                          "; expected int32, int64, float32 or float64 holding integer lengths");
    (*out)[0] = t[0];
    return MX_SUCCESS;
}

/* As hmm_forward's: checks what is known, fills in N (from A, else pi, else
 * log_emission's last axis) and batch (from log_emission, else lengths).  The
 * checks come in hmmop.checks.check_dense_shapes' order, with its messages. */
MXReturnValue infer_shape_dense(const std::unordered_map<std::string, std::string> &attrs,
                                std::vector<std::vector<unsigned>> *in,
                                std::vector<std::vector<unsigned>> *out)
{
    ErrorList::get().sweep();
    std::vector<unsigned> &A = (*in)[0], &pi = (*in)[1], &le = (*in)[2], &len = (*in)[3];
    mark_unknown(in);
    if (!A.empty() && (A.size() != 2 || (known(A[0]) && known(A[1]) && A[0] != A[1])))
        return fail_dense("A must be a square (N, N) transition matrix, got shape " +
                          shape_str(A));
    unsigned n = kUnknown;
    if (A.size() == 2)
        n = known(A[0]) ? A[0] : A[1];
    if (!known(n) && pi.size() == 1)
        n = pi[0];
    if (!known(n) && le.size() == 3)
        n = le[2];
    const std::string N = std::to_string(n);
    if (!pi.empty() && (pi.size() != 1 || (known(n) && known(pi[0]) && pi[0] != n)))
        return fail_dense("pi must have shape (N,)" + (known(n) ? " = (" + N + ",)" : "") +
                          ", got shape " + shape_str(pi));
    if (!le.empty() && (le.size() != 3 || (known(n) && known(le[2]) && le[2] != n)))
        return fail_dense("log_emission must have shape (batch, T, N)" +
                          (known(n) ? " = (batch, T, " + N + ")" : "") +
                          " with one column per state of A, got shape " + shape_str(le));
    if (known(n)) {
        A = {n, n};
        pi = {n};
        if (le.empty())
            le = {kUnknown, kUnknown, n};
        else
            le[2] = n;
    }
    const unsigned batch = le.size() == 3 && known(le[0]) ? le[0]
                           : len.size() == 1             ? len[0]
                                                         : kUnknown;
    if (!len.empty() && (len.size() != 1 || (known(batch) && known(len[0]) && len[0] != batch)))
        return fail_dense("lengths must have shape (batch,)" +
                          (known(batch) ? " = (" + std::to_string(batch) + ",)" : "") +
                          ", one length per sequence of log_emission, got shape " +
                          shape_str(len));
    if (known(batch)) {
        len = {batch};
        if (le.size() == 3)
            le[0] = batch;
    }
    (*out)[0] = {batch};
    return MX_SUCCESS;
}

/* lengths (batch,) as int64, checked as hmmop.checks.prepare_lengths does: first
 * that every float length is an integer, then that each is in [0, T].  "" or the
 * error, naming the first bad lengths[b]. */
template <typename L>
std::string prepare_lengths(const L *src, int64_t batch, int64_t T, std::vector<int64_t> *out)
{
    const bool is_float = !std::numeric_limits<L>::is_integer;
    out->resize(static_cast<size_t>(batch));
    if (is_float)
        for (int64_t b = 0; b < batch; ++b)
            if (!std::isfinite(src[b]) || src[b] != std::floor(src[b]))
                return "lengths[" + std::to_string(b) + "] = " + float_repr(src[b]) +
                       " is not an integer";
    for (int64_t b = 0; b < batch; ++b) {
        const double v = static_cast<double>(src[b]);
        const bool inside = is_float ? (0 <= v && v <= static_cast<double>(T))
                                     : (0 <= src[b] && static_cast<int64_t>(src[b]) <= T);
        if (!inside) {
            /* printed as the int64 it is (floats: whole numbers here) */
            const bool fits = !is_float || std::fabs(v) < 9.2e18;
            const std::string value = fits ? std::to_string(static_cast<long long>(src[b]))
                                           : float_repr(src[b]);
            return "lengths[" + std::to_string(b) + "] = " + value + " is outside [0, T] = [0, " +
                   std::to_string(T) + "] (T: the steps of log_emission)";
        }
        (*out)[b] = static_cast<int64_t>(src[b]);
    }
    return "";
}

/* lengths (batch,) of any dtype the op takes, as int64 (prepare_lengths); "" or the error. */
std::string read_lengths(MXTensor &len, int64_t batch, int64_t T, std::vector<int64_t> *out)
{
    switch (len.dtype) {
    case mxnet::ext::kInt32: return prepare_lengths(len.data<int32_t>(), batch, T, out);
    case mxnet::ext::kInt64: return prepare_lengths(len.data<int64_t>(), batch, T, out);
    case mxnet::ext::kFloat32: return prepare_lengths(len.data<float>(), batch, T, out);
    case mxnet::ext::kFloat64: return prepare_lengths(len.data<double>(), batch, T, out);
    default:
        return std::string("lengths has dtype ") + dtype_name(len.dtype) +
               "; expected int32, int64, float32 or float64 holding integer lengths";
    }
}

class HMMForwardDenseOp : public CustomStatefulOp {
 public:
    ~HMMForwardDenseOp() override { hmm_batch_free(plan_); }

    MXReturnValue Forward(std::vector<MXTensor> *inputs, std::vector<MXTensor> *outputs,
                          const OpResource &res) override
    {
        ErrorList::get().sweep();
        hmm_batch_free(plan_);
        plan_ = nullptr;
        MXTensor &A = (*inputs)[0], &pi = (*inputs)[1], &le = (*inputs)[2], &len = (*inputs)[3];
        MXTensor &ll = (*outputs)[0];
        if (A.shape.size() != 2 || pi.shape.size() != 1 || le.shape.size() != 3 ||
            len.shape.size() != 1)
            return fail_dense("inputs of unexpected ranks: A " + shape_str(A.shape) + ", pi " +
                              shape_str(pi.shape) + ", log_emission " + shape_str(le.shape) +
                              ", lengths " + shape_str(len.shape));
        const int64_t n = A.shape[0], batch = le.shape[0], T = le.shape[1];
        if (n < 1 || A.shape[1] != n || pi.shape[0] != n || le.shape[2] != n)
            return fail_dense("A (N, N), pi (N,), log_emission (batch, T, N) with N >= 1 "
                              "expected, got A " + shape_str(A.shape) + ", pi " +
                              shape_str(pi.shape) + ", log_emission " + shape_str(le.shape));
        if (batch < 1 || T < 1)
            return fail_dense("log_emission must hold at least one sequence and one time step, "
                              "got shape " + shape_str(le.shape) +
                              " (give empty sequences length 0 instead)");
        if (len.shape[0] != batch)
            return fail_dense("lengths must have shape (batch,) = (" + std::to_string(batch) +
                              ",), one length per sequence of log_emission, got shape " +
                              shape_str(len.shape));
        if (n > 0x7fffffff)
            return fail_dense("too many states");
        const std::string err = read_lengths(len, batch, T, &lengths_);
        if (!err.empty())
            return fail_dense(err);
        if (A.dtype != pi.dtype || A.dtype != le.dtype || A.dtype != ll.dtype ||
            (A.dtype != mxnet::ext::kFloat32 && A.dtype != mxnet::ext::kFloat64))
            return fail_dense("A, pi, log_emission and ll must share one dtype, float32 or "
                              "float64");
        if (ll.size() != batch)
            return fail_dense("ll has " + std::to_string(ll.size()) + " elements, expected " +
                              std::to_string(batch));
        dtype_ = A.dtype;
        n_ = static_cast<int>(n);
        size_ = batch * T;
        starts_.resize(static_cast<size_t>(batch));
        for (int64_t b = 0; b < batch; ++b)
            starts_[b] = b * T;
        plan_ = hmm_batch_new_dense(n_, batch, size_, starts_.data(), lengths_.data(),
                                    dtype_ == mxnet::ext::kFloat32 ? HMM_FLOAT32 : HMM_FLOAT64);
        if (!plan_)
            return fail_dense("no memory for the batch plan");
        ll64_.assign(static_cast<size_t>(batch), 0.0);
        if (hmm_batch_forward_dense(plan_, A.data_ptr, pi.data_ptr, le.data_ptr, ll64_.data(),
                                    std::max(1, num_threads())) != 0)
            return fail_dense("no memory for the forward pass");
        store_as(ll, dtype_, ll64_.data());
        return MX_SUCCESS;
    }

    /* inputs: dll, A, pi, log_emission, lengths, ll; outputs: dA, dpi,
     * dlog_emission, dlengths, always overwritten (lib_api passes no request). */
    MXReturnValue Backward(std::vector<MXTensor> *inputs, std::vector<MXTensor> *outputs,
                           const OpResource &res) override
    {
        ErrorList::get().sweep();
        if (!plan_)
            return fail_dense("backward without a successful forward");
        const std::string err = read_head((*inputs)[0], ll64_.size(), &g64_);
        if (!err.empty())
            return fail_dense(err);
        /* The driver reads log_emission again (the forward's input, which MXNet keeps for
         * the backward of an extension op) and writes dlog_emission in the plan's dtype
         * straight into MXNet's buffer. */
        MXTensor &le = (*inputs)[3], &dle = (*outputs)[2];
        for (MXTensor *t : {&le, &dle})
            if (t->data_ptr && (t->dtype != dtype_ || t->size() != size_ * n_))
                return fail_dense(std::string(t == &le ? "log_emission" : "its gradient") +
                                  " has dtype " + dtype_name(t->dtype) + " and " +
                                  std::to_string(t->size()) + " elements in the backward, "
                                  "expected " + dtype_name(dtype_) + " and " +
                                  std::to_string(size_ * n_));
        if (!le.data_ptr)
            return fail_dense("backward without log_emission");
        const size_t n = n_;
        grads_.assign(n * n + n, 0.0);
        double *dA = grads_.data(), *dpi = dA + n * n;
        if (hmm_batch_backward_dense(plan_, g64_.data(), le.data_ptr, dA, dpi, dle.data_ptr,
                                     std::max(1, num_threads())) != 0)
            return fail_dense("no memory for the backward pass");
        const double *src[2] = {dA, dpi};
        for (int i = 0; i < 2; ++i)
            if ((*outputs)[i].data_ptr)        /* none where not asked for (grad_req 'null') */
                store_as((*outputs)[i], dtype_, src[i]);
        zero_grad((*outputs)[3]);
        return MX_SUCCESS;
    }

 private:
    hmm_batch *plan_ = nullptr;
    int n_ = 0;
    int dtype_ = 0;
    int64_t size_ = 0;                       /* rows of log_emission: batch * T */
    std::vector<int64_t> starts_, lengths_;  /* read by plan_ until it is freed */
    std::vector<double> ll64_, g64_, grads_;
};

MXReturnValue create_state_dense(const std::unordered_map<std::string, std::string> &attrs,
                                 const MXContext &ctx,
                                 const std::vector<std::vector<unsigned int>> &in_shapes,
                                 const std::vector<int> in_types, CustomStatefulOp **op)
{
    ErrorList::get().sweep();
    *op = CustomStatefulOp::create<HMMForwardDenseOp>();
    return MX_SUCCESS;
}


/* ---- A model axis: hmm_forward_many and hmm_forward_by_model ----------------
 *
 * The contract of the CustomOps of hmmop/ops/model_axis.py: A (K, N, N),
 * B (K, N, M), pi (K, N) of one dtype; obs as for hmm_forward.
 * hmm_forward_many(A, B, pi, obs): ll (K, batch), every sequence under every
 * model.  hmm_forward_by_model(A, B, pi, obs, model): model (batch,) of int32,
 * int64, float32 or float64 holding indices in [0, K); ll (batch,), sequence b
 * under model model[b].  Backward: dA, dB, dpi (a model's from its own terms
 * only; zero for a model without sequences), zero gradients for obs and model.
 * The work is csrc/hmm_many.c's, the Cython adapter's driver: the same bits. */

const char kMany[] = "hmm_forward_many";
const char kByModel[] = "hmm_forward_by_model";

MXReturnValue parse_attrs_by_model(const std::unordered_map<std::string, std::string> &attrs,
                                   int *num_in, int *num_out)
{
    ErrorList::get().sweep();
    *num_in = 5;
    *num_out = 1;
    return MX_SUCCESS;
}

/* A model-axis op's dtypes: the rank-2 op's rules (rank2), then model's (the 5th input) where there is
 * one: fallback where unknown, by_model names a failure. */
template <mxnet::ext::inferType_t rank2, int fallback, const char *by_model>
MXReturnValue infer_type_model_axis(const std::unordered_map<std::string, std::string> &attrs,
                                    std::vector<int> *in, std::vector<int> *out)
{
    if (rank2(attrs, in, out) != MX_SUCCESS)
        return MX_FAIL;
    std::vector<int> &t = *in;
    if (t.size() > 4) {
        if (t[4] < 0)
            t[4] = fallback;
        if (t[4] != 0 && t[4] != 1 && t[4] != 4 && t[4] != 6)
            return fail_in(by_model, std::string("model has dtype ") + dtype_name(t[4]) +
                                         "; expected int32, int64, float32 or float64 holding model indices");
    }
    return MX_SUCCESS;
}

/* infer_type's rules, and model's dtype (float32 where unknown) where there is one. */
const auto infer_type_many = infer_type_model_axis<infer_type, mxnet::ext::kFloat32, kByModel>;

/* The start of a model-axis op's shape inference: every unknown dimension marked; the op's name,
 * by_model where there is model (the 5th input), else many. */
const char *model_axis_shapes(std::vector<std::vector<unsigned>> *in, const char *many, const char *by_model)
{
    ErrorList::get().sweep();
    mark_unknown(in);
    return in->size() > 4 ? by_model : many;
}

/* Ranks and what is known of K, N, M; fills in the output: (K, batch), or (batch,) with model. */
MXReturnValue infer_shape_many(const std::unordered_map<std::string, std::string> &attrs,
                               std::vector<std::vector<unsigned>> *in,
                               std::vector<std::vector<unsigned>> *out)
{
    const char *op = model_axis_shapes(in, kMany, kByModel);
    const bool indexed = op == kByModel;
    std::vector<unsigned> &A = (*in)[0], &B = (*in)[1], &pi = (*in)[2], &obs = (*in)[3];
    if ((!A.empty() && A.size() != 3) || (!B.empty() && B.size() != 3) || (!pi.empty() && pi.size() != 2))
        return fail_in(op, "A, B and pi must be A (K, N, N), B (K, N, M), pi (K, N) for a model axis, got A " +
                               shape_str(A) + ", B " + shape_str(B) + ", pi " + shape_str(pi));
    if (!obs.empty() && obs.size() > 2)
        return fail_in(op, "obs must have shape (T,) or (batch, T), got shape " + shape_str(obs) +
                               " (rank " + std::to_string(obs.size()) + ")");
    unsigned k = kUnknown, n = kUnknown;
    if (!agree({A.empty() ? kUnknown : A[0], B.empty() ? kUnknown : B[0], pi.empty() ? kUnknown : pi[0]}, &k))
        return fail_in(op, "A, B and pi must hold the same number of models (their leading axis), got A " +
                               shape_str(A) + ", B " + shape_str(B) + ", pi " + shape_str(pi));
    if (!agree({A.size() == 3 ? A[1] : kUnknown, A.size() == 3 ? A[2] : kUnknown, B.size() == 3 ? B[1] : kUnknown,
                pi.size() == 2 ? pi[1] : kUnknown},
               &n))
        return fail_in(op, "A (K, N, N), B (K, N, M), pi (K, N) disagree on N: A " + shape_str(A) + ", B " +
                               shape_str(B) + ", pi " + shape_str(pi));
    const unsigned m = B.size() == 3 ? B[2] : kUnknown;
    A = {k, n, n};
    B = {k, n, m};
    pi = {k, n};
    const unsigned batch = obs.size() == 1 ? 1 : obs.size() == 2 ? obs[0] : kUnknown;
    if (indexed) {
        std::vector<unsigned> &model = (*in)[4];
        if (!model.empty() && (model.size() != 1 || (known(batch) && known(model[0]) && model[0] != batch)))
            return fail_in(op, "model must have shape (batch,), one model index per sequence of obs, got shape " +
                                   shape_str(model));
        (*out)[0] = {known(batch) ? batch : (model.size() == 1 ? model[0] : kUnknown)};
    } else {
        (*out)[0] = {k, batch};
    }
    return MX_SUCCESS;
}

/* model (batch,) as int64, checked as hmmop.ops.checks.prepare_model does (params: whose leading axis
 * K is); "" or the error. */
template <typename I>
std::string prepare_model(const I *model, int64_t batch, int64_t k, const char *params, std::vector<int64_t> *out)
{
    out->resize(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) {
        const double v = static_cast<double>(model[b]);
        if (!std::numeric_limits<I>::is_integer && !(v == std::floor(v)))
            return "model[" + std::to_string(b) + "] = " + float_repr(v) + " is not an integer model index";
        if (!(0 <= v && v < static_cast<double>(k)))
            return "model[" + std::to_string(b) + "] = " + std::to_string(static_cast<long long>(v)) +
                   " is not a model index in [0, K) = [0, " + std::to_string(k) +
                   ") (K: the leading axis of " + params + ")";
        (*out)[b] = static_cast<int64_t>(v);
    }
    return "";
}

/* model (batch,) of any dtype the ops take, as int64 (prepare_model); "" or the error. */
std::string read_model(MXTensor &mt, int64_t batch, int64_t k, const char *params, const char *of,
                       std::vector<int64_t> *out)
{
    if (mt.shape.size() != 1 || mt.shape[0] != batch)
        return "model must have shape (batch,) = (" + std::to_string(batch) + ",), one model index per sequence of " +
               of + ", got shape " + shape_str(mt.shape);
    switch (mt.dtype) {
    case mxnet::ext::kInt32: return prepare_model(mt.data<int32_t>(), batch, k, params, out);
    case mxnet::ext::kInt64: return prepare_model(mt.data<int64_t>(), batch, k, params, out);
    case mxnet::ext::kFloat32: return prepare_model(mt.data<float>(), batch, k, params, out);
    case mxnet::ext::kFloat64: return prepare_model(mt.data<double>(), batch, k, params, out);
    default:
        return std::string("model has dtype ") + dtype_name(mt.dtype) +
               "; expected int32, int64, float32 or float64 holding model indices";
    }
}

/* The parameters' gradients src[i] (double; nullptr: written by the driver) into outputs[i] where
 * asked for, and a zero gradient for the outputs from `zeros` on (the integer-valued inputs'). */
void store_grads(std::vector<MXTensor> *outputs, int dtype, const std::vector<const double *> &src, size_t zeros)
{
    for (size_t i = 0; i < src.size(); ++i)
        if (src[i] && (*outputs)[i].data_ptr)        /* none where not asked for (grad_req 'null') */
            store_as((*outputs)[i], dtype, src[i]);
    for (size_t i = zeros; i < outputs->size(); ++i)
        zero_grad((*outputs)[i]);
}

/* What the model-axis operators (hmm_forward_many, hmm_forward_by_model and their dense forms) share:
 * a csrc/hmm_many.c plan made by each Forward; the model indices where there are any (the 5th input);
 * ll, of the plan's size; the output gradient and the parameters' gradients in Backward.  An op adds
 * its inputs' checks (prepare), its plan (new_plan) and its drivers (forward, backward). */
class HMMModelAxisOp : public CustomStatefulOp {
 public:
    ~HMMModelAxisOp() override { hmm_many_free(plan_); }

    MXReturnValue Forward(std::vector<MXTensor> *inputs, std::vector<MXTensor> *outputs,
                          const OpResource &res) override
    {
        ErrorList::get().sweep();
        hmm_many_free(plan_);
        plan_ = nullptr;
        MXTensor &A = (*inputs)[0], &ll = (*outputs)[0];
        int64_t batch = 0, T = 0;
        std::string err = prepare(*inputs, &batch, &T);
        if (!err.empty())
            return fail_in(op_, err);
        const int64_t k = A.shape[0];
        const int64_t *model = nullptr;
        if (indexed_) {
            err = read_model((*inputs)[4], batch, k, params_, of_, &model_);
            if (!err.empty())
                return fail_in(op_, err);
            model = model_.data();
        }
        if (A.dtype != (*inputs)[1].dtype || A.dtype != (*inputs)[2].dtype || A.dtype != ll.dtype ||
            (A.dtype != mxnet::ext::kFloat32 && A.dtype != mxnet::ext::kFloat64))
            return fail_in(op_, std::string(floats_) + " and ll must share one dtype, float32 or float64");
        dtype_ = A.dtype;
        k_ = static_cast<int>(k);
        n_ = static_cast<int>(A.shape[1]);
        int64_t bad = -1;
        plan_ = new_plan(batch, T, model, dtype_ == mxnet::ext::kFloat32 ? HMM_FLOAT32 : HMM_FLOAT64, &bad);
        if (!plan_)
            return fail_in(op_, "no memory for the model-axis plan");
        const int64_t size = hmm_many_size(plan_);
        if (ll.size() != size)
            return fail_in(op_, "ll has " + std::to_string(ll.size()) + " elements, expected " + std::to_string(size));
        ll64_.assign(static_cast<size_t>(size), 0.0);
        if (forward(*inputs, ll64_.data(), std::max(1, num_threads())) != 0)
            return fail_in(op_, "no memory for the forward pass");
        store_as(ll, dtype_, ll64_.data());
        return MX_SUCCESS;
    }

    /* inputs: dll, then the forward's inputs and output; outputs: the parameters' gradients, then
     * zero gradients for the integer-valued inputs (obs or lengths, and model), always overwritten
     * (lib_api passes no gradient request). */
    MXReturnValue Backward(std::vector<MXTensor> *inputs, std::vector<MXTensor> *outputs,
                           const OpResource &res) override
    {
        ErrorList::get().sweep();
        if (!plan_)
            return fail_in(op_, "backward without a successful forward");
        std::string err = read_head((*inputs)[0], ll64_.size(), &g64_);
        if (!err.empty())
            return fail_in(op_, err);
        err = check_backward(*inputs, *outputs);
        if (!err.empty())
            return fail_in(op_, err);
        /* grads_: one block per parameter whose gradient is summed here, K times a model's size */
        const size_t k = k_;
        const std::vector<size_t> sizes = grad_sizes();
        size_t total = 0;
        for (size_t s : sizes)
            total += k * s;
        grads_.assign(total, 0.0);
        std::vector<double *> d;
        double *at = grads_.data();
        for (size_t s : sizes) {
            d.push_back(at);
            at += k * s;
        }
        if (backward(*inputs, *outputs, d, std::max(1, num_threads())) != 0)
            return fail_in(op_, "no memory for the backward pass");
        /* zero gradients from the 4th output on: obs or lengths, and model */
        store_grads(outputs, dtype_, std::vector<const double *>(d.begin(), d.end()), 3);
        return MX_SUCCESS;
    }

 protected:
    /* op: the operator's name in messages; params, of: read_model's (whose leading axis K is, what
     * model indexes); floats: the float inputs that share ll's dtype, for the message. */
    HMMModelAxisOp(bool indexed, const char *op, const char *params, const char *of, const char *floats)
        : indexed_(indexed), op_(op), params_(params), of_(of), floats_(floats)
    {
    }

    /* The checks of the inputs before model's (ranks, shapes, obs or lengths), keeping what the plan
     * reads; batch and T of the sequences.  "" or the error. */
    virtual std::string prepare(std::vector<MXTensor> &in, int64_t *batch, int64_t *T) = 0;
    /* The plan of k_ models of n_ states (nullptr: no memory). */
    virtual hmm_many *new_plan(int64_t batch, int64_t T, const int64_t *model, int dt, int64_t *bad) = 0;
    /* The forward driver into ll64 (nonzero: no memory). */
    virtual int forward(std::vector<MXTensor> &in, double *ll64, int threads) = 0;
    /* What the backward checks beyond dll; "" or the error. */
    virtual std::string check_backward(std::vector<MXTensor> &in, std::vector<MXTensor> &out) { return ""; }
    /* A model's number of elements in each parameter gradient that grads_ holds, in output order. */
    virtual std::vector<size_t> grad_sizes() const = 0;
    /* The backward driver from g64_ into d (grads_'s blocks; nonzero: no memory). */
    virtual int backward(std::vector<MXTensor> &in, std::vector<MXTensor> &out, const std::vector<double *> &d,
                         int threads) = 0;

    const bool indexed_;
    const char *const op_, *const params_, *const of_, *const floats_;
    hmm_many *plan_ = nullptr;
    int k_ = 0, n_ = 0;
    int dtype_ = 0;
    std::vector<int64_t> lengths_;   /* read by plan_ until it is freed */
    std::vector<int64_t> model_;
    std::vector<double> ll64_, g64_, grads_;
};

/* A model-axis operator's state: Op(indexed), indexed with the 5th input, model. */
template <class Op>
MXReturnValue create_state_model_axis(const std::unordered_map<std::string, std::string> &attrs,
                                      const MXContext &ctx,
                                      const std::vector<std::vector<unsigned int>> &in_shapes,
                                      const std::vector<int> in_types, CustomStatefulOp **op)
{
    ErrorList::get().sweep();
    *op = CustomStatefulOp::create<Op>(in_shapes.size() > 4);
    return MX_SUCCESS;
}

class HMMManyOp : public HMMModelAxisOp {
 public:
    explicit HMMManyOp(bool indexed)
        : HMMModelAxisOp(indexed, indexed ? kByModel : kMany, "A, B and pi", "obs", "A, B, pi")
    {
    }

 protected:
    std::string prepare(std::vector<MXTensor> &in, int64_t *batch, int64_t *T) override
    {
        MXTensor &A = in[0], &B = in[1], &pi = in[2], &obs = in[3];
        if (A.shape.size() != 3 || B.shape.size() != 3 || pi.shape.size() != 2 || obs.shape.size() < 1 ||
            obs.shape.size() > 2 || (indexed_ && in[4].shape.size() != 1))
            return "inputs of unexpected ranks: A " + shape_str(A.shape) + ", B " + shape_str(B.shape) + ", pi " +
                   shape_str(pi.shape) + ", obs " + shape_str(obs.shape);
        const int64_t k = A.shape[0], n = A.shape[1], m = B.shape[2];
        *batch = obs.shape.size() == 1 ? 1 : obs.shape[0];
        *T = obs.shape.back();
        if (k < 1 || n < 1 || m < 1 || A.shape[2] != n || B.shape[0] != k || B.shape[1] != n ||
            pi.shape[0] != k || pi.shape[1] != n)
            return "A (K, N, N), B (K, N, M), pi (K, N) with K, N, M >= 1 expected, got A " + shape_str(A.shape) +
                   ", B " + shape_str(B.shape) + ", pi " + shape_str(pi.shape);
        if (*batch < 1 || *T < 1)
            return "obs must hold at least one row and one time step, got shape " + shape_str(obs.shape) +
                   " (pad empty sequences with -1 instead)";
        if (k > 0x7fffffff || n > 0x7fffffff || m >= 0x7fffffff)
            return "too many models, states or symbols";
        m_ = static_cast<int>(m);
        switch (obs.dtype) {
        case mxnet::ext::kInt32: return prepare_obs(obs.data<int32_t>(), *batch, *T, m, &obs32_, &lengths_);
        case mxnet::ext::kInt64: return prepare_obs(obs.data<int64_t>(), *batch, *T, m, &obs32_, &lengths_);
        case mxnet::ext::kFloat32: return prepare_obs(obs.data<float>(), *batch, *T, m, &obs32_, &lengths_);
        case mxnet::ext::kFloat64: return prepare_obs(obs.data<double>(), *batch, *T, m, &obs32_, &lengths_);
        default:
            return std::string("obs has dtype ") + dtype_name(obs.dtype) +
                   "; expected int32, int64, float32 or float64 holding integer symbols";
        }
    }

    hmm_many *new_plan(int64_t batch, int64_t T, const int64_t *model, int dt, int64_t *bad) override
    {
        return hmm_many_new(k_, n_, m_, batch, T, obs32_.data(), lengths_.data(), model, dt, bad);
    }

    int forward(std::vector<MXTensor> &in, double *ll64, int threads) override
    {
        return hmm_many_forward(plan_, in[0].data_ptr, in[1].data_ptr, in[2].data_ptr, ll64, threads);
    }

    /* outputs: dA, dB, dpi, dobs (, dmodel) */
    std::vector<size_t> grad_sizes() const override
    {
        const size_t n = n_, m = m_;
        return {n * n, n * m, n};
    }

    int backward(std::vector<MXTensor> &in, std::vector<MXTensor> &out, const std::vector<double *> &d,
                 int threads) override
    {
        return hmm_many_backward(plan_, g64_.data(), d[0], d[1], d[2], threads);
    }

 private:
    int m_ = 0;
    std::vector<int32_t> obs32_;     /* read by plan_ until it is freed, as lengths_ */
};

/* ---- A model axis on hmm_forward_dense: hmm_forward_dense_many, hmm_forward_dense_by_model ----
 *
 * The contract of the CustomOps of hmmop/ops/model_axis.py: A (K, N, N), pi (K, N) of one dtype;
 * lengths as for hmm_forward_dense.  hmm_forward_dense_many(A, pi, log_emission, lengths):
 * log_emission (K, batch, T, N), each model's own scores of the sequences; ll (K, batch).
 * hmm_forward_dense_by_model(A, pi, log_emission, lengths, model): log_emission (batch, T, N), each
 * sequence's scores under its own model, model (batch,) as for hmm_forward_by_model; ll (batch,).
 * Backward: dA, dpi (a model's from its own terms, zero without sequences), dlog_emission (the
 * posteriors times dll, 0 in the padding), zero gradients for lengths and model.  The work is
 * csrc/hmm_many.c's dense plans, the Cython adapter's driver: the same bits. */

const char kDenseMany[] = "hmm_forward_dense_many";
const char kDenseByModel[] = "hmm_forward_dense_by_model";

/* infer_type_dense's rules, and model's dtype (int64 where unknown) where there is one. */
const auto infer_type_dense_many = infer_type_model_axis<infer_type_dense, mxnet::ext::kInt64, kDenseByModel>;

/* Ranks and what is known of K, N and batch; fills in the output: (K, batch), or (batch,) with model. */
MXReturnValue infer_shape_dense_many(const std::unordered_map<std::string, std::string> &attrs,
                                     std::vector<std::vector<unsigned>> *in,
                                     std::vector<std::vector<unsigned>> *out)
{
    const char *op = model_axis_shapes(in, kDenseMany, kDenseByModel);
    const bool indexed = op == kDenseByModel;
    std::vector<unsigned> &A = (*in)[0], &pi = (*in)[1], &le = (*in)[2], &len = (*in)[3];
    const size_t le_rank = indexed ? 3 : 4;     /* (batch, T, N) or (K, batch, T, N) */
    if ((!A.empty() && A.size() != 3) || (!pi.empty() && pi.size() != 2) || (!le.empty() && le.size() != le_rank) ||
        (!len.empty() && len.size() != 1))
        return fail_in(op, std::string("A (K, N, N), pi (K, N), log_emission ") +
                               (indexed ? "(batch, T, N)" : "(K, batch, T, N)") + ", lengths (batch,) expected, got A " +
                               shape_str(A) + ", pi " + shape_str(pi) + ", log_emission " + shape_str(le) +
                               ", lengths " + shape_str(len));
    unsigned k = kUnknown, n = kUnknown, batch = kUnknown;
    if (!agree({A.empty() ? kUnknown : A[0], pi.empty() ? kUnknown : pi[0], le.size() == 4 ? le[0] : kUnknown}, &k))
        return fail_in(op, "A, pi and log_emission must hold the same number of models (their leading axis), "
                           "got A " + shape_str(A) + ", pi " + shape_str(pi) + ", log_emission " + shape_str(le));
    if (!agree({A.empty() ? kUnknown : A[1], A.empty() ? kUnknown : A[2], pi.empty() ? kUnknown : pi[1],
                le.empty() ? kUnknown : le.back()},
               &n))
        return fail_in(op, "A (K, N, N), pi (K, N), log_emission (.., N) disagree on N: A " + shape_str(A) +
                               ", pi " + shape_str(pi) + ", log_emission " + shape_str(le));
    const bool has_model = indexed && (*in)[4].size() == 1;
    if (indexed && !has_model && !(*in)[4].empty())
        return fail_in(op, "model must have shape (batch,), one model index per sequence of log_emission, got shape " +
                               shape_str((*in)[4]));
    /* every place batch appears: log_emission, lengths, model */
    if (!agree({le.empty() ? kUnknown : le[le_rank - 3], len.empty() ? kUnknown : len[0],
                has_model ? (*in)[4][0] : kUnknown},
               &batch))
        return fail_in(op, "log_emission, lengths and model disagree on batch: log_emission " + shape_str(le) +
                               ", lengths " + shape_str(len) + (indexed ? ", model " + shape_str((*in)[4]) : ""));
    A = {k, n, n};
    pi = {k, n};
    const unsigned T = le.empty() ? kUnknown : le[le_rank - 2];
    le = indexed ? std::vector<unsigned>{batch, T, n} : std::vector<unsigned>{k, batch, T, n};
    len = {batch};
    if (indexed)
        (*in)[4] = {batch};
    (*out)[0] = indexed ? std::vector<unsigned>{batch} : std::vector<unsigned>{k, batch};
    return MX_SUCCESS;
}

class HMMDenseManyOp : public HMMModelAxisOp {
 public:
    explicit HMMDenseManyOp(bool indexed)
        : HMMModelAxisOp(indexed, indexed ? kDenseByModel : kDenseMany, "A and pi", "log_emission",
                         "A, pi, log_emission")
    {
    }

 protected:
    std::string prepare(std::vector<MXTensor> &in, int64_t *batch, int64_t *T) override
    {
        MXTensor &A = in[0], &pi = in[1], &le = in[2], &len = in[3];
        const size_t le_rank = indexed_ ? 3 : 4;
        if (A.shape.size() != 3 || pi.shape.size() != 2 || le.shape.size() != le_rank || len.shape.size() != 1)
            return "inputs of unexpected ranks: A " + shape_str(A.shape) + ", pi " + shape_str(pi.shape) +
                   ", log_emission " + shape_str(le.shape) + ", lengths " + shape_str(len.shape);
        const int64_t k = A.shape[0], n = A.shape[1];
        *batch = le.shape[le_rank - 3];
        *T = le.shape[le_rank - 2];
        if (k < 1 || n < 1 || A.shape[2] != n || pi.shape[0] != k || pi.shape[1] != n || le.shape.back() != n ||
            (!indexed_ && le.shape[0] != k))
            return "A (K, N, N), pi (K, N), log_emission " +
                   std::string(indexed_ ? "(batch, T, N)" : "(K, batch, T, N)") + " with K, N >= 1 expected, got A " +
                   shape_str(A.shape) + ", pi " + shape_str(pi.shape) + ", log_emission " + shape_str(le.shape);
        if (*batch < 1 || *T < 1)
            return "log_emission must hold at least one sequence and one time step, got shape " +
                   shape_str(le.shape) + " (give empty sequences length 0 instead)";
        if (len.shape[0] != *batch)
            return "lengths must have shape (batch,) = (" + std::to_string(*batch) +
                   ",), one length per sequence of log_emission, got shape " + shape_str(len.shape);
        if (k > 0x7fffffff || n > 0x7fffffff)
            return "too many models or states";
        le_size_ = le.size();
        return read_lengths(len, *batch, *T, &lengths_);
    }

    hmm_many *new_plan(int64_t batch, int64_t T, const int64_t *model, int dt, int64_t *bad) override
    {
        return hmm_many_new_dense(k_, n_, batch, T, lengths_.data(), model, dt, bad);
    }

    int forward(std::vector<MXTensor> &in, double *ll64, int threads) override
    {
        return hmm_many_forward_dense(plan_, in[0].data_ptr, in[1].data_ptr, in[2].data_ptr, ll64, threads);
    }

    /* As hmm_forward_dense's: log_emission again, dlog_emission written by the driver. */
    std::string check_backward(std::vector<MXTensor> &in, std::vector<MXTensor> &out) override
    {
        MXTensor &le = in[3], &dle = out[2];
        for (MXTensor *t : {&le, &dle})
            if (t->data_ptr && (t->dtype != dtype_ || t->size() != le_size_))
                return std::string(t == &le ? "log_emission" : "its gradient") + " has dtype " +
                       dtype_name(t->dtype) + " and " + std::to_string(t->size()) +
                       " elements in the backward, expected " + dtype_name(dtype_) + " and " +
                       std::to_string(le_size_);
        if (!le.data_ptr)
            return "backward without log_emission";
        return "";
    }

    /* outputs: dA, dpi, dlog_emission (the driver's, straight into MXNet's buffer), dlengths (, dmodel) */
    std::vector<size_t> grad_sizes() const override
    {
        const size_t n = n_;
        return {n * n, n};
    }

    int backward(std::vector<MXTensor> &in, std::vector<MXTensor> &out, const std::vector<double *> &d,
                 int threads) override
    {
        return hmm_many_backward_dense(plan_, g64_.data(), in[3].data_ptr, d[0], d[1], out[2].data_ptr, threads);
    }

 private:
    int64_t le_size_ = 0;            /* log_emission's elements */
};

}  // namespace

REGISTER_OP(hmm_forward)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape)
    .setCreateOpState(create_state, "cpu");

REGISTER_OP(hmm_forward_dense)
    .setParseAttrs(parse_attrs)         /* 4 inputs, 1 output, no attributes: as hmm_forward */
    .setInferType(infer_type_dense)
    .setInferShape(infer_shape_dense)
    .setCreateOpState(create_state_dense, "cpu");

REGISTER_OP(hmm_forward_many)
    .setParseAttrs(parse_attrs)         /* 4 inputs, 1 output: A, B, pi with a model axis, obs */
    .setInferType(infer_type_many)
    .setInferShape(infer_shape_many)
    .setCreateOpState(create_state_model_axis<HMMManyOp>, "cpu");

REGISTER_OP(hmm_forward_by_model)
    .setParseAttrs(parse_attrs_by_model)   /* 5 inputs: the model index of each sequence last */
    .setInferType(infer_type_many)
    .setInferShape(infer_shape_many)
    .setCreateOpState(create_state_model_axis<HMMManyOp>, "cpu");

REGISTER_OP(hmm_forward_dense_many)
    .setParseAttrs(parse_attrs)         /* 4 inputs: A, pi with a model axis, log_emission (K, ...), lengths */
    .setInferType(infer_type_dense_many)
    .setInferShape(infer_shape_dense_many)
    .setCreateOpState(create_state_model_axis<HMMDenseManyOp>, "cpu");

REGISTER_OP(hmm_forward_dense_by_model)
    .setParseAttrs(parse_attrs_by_model)   /* 5 inputs: the model index of each sequence last */
    .setInferType(infer_type_dense_many)
    .setInferShape(infer_shape_dense_many)
    .setCreateOpState(create_state_model_axis<HMMDenseManyOp>, "cpu");

/* For tests: how many messages lib_api's list holds now; the thread count a
 * call would use now. */
extern "C" int hmmop_error_count() { return static_cast<int>(ErrorList::get().size()); }
extern "C" int hmmop_num_threads() { return num_threads(); }

/* hmmop.set_num_threads(n) reaches the library through this (0: back to the default). */
extern "C" void hmmop_set_num_threads(int n) { thread_override.store(n > 0 ? n : 0); }

MXReturnValue initialize(int version)
{
    ErrorList::get();       /* reserves the message list before any use */
    if (version < 10900) {
        std::fprintf(stderr, "hmmop: libhmmop_op needs MXNet >= 1.9.0, this is %d\n", version);
        return MX_FAIL;
    }
    return MX_SUCCESS;
}
