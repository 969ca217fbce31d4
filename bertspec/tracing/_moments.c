/* bertspec.tracing._moments: the tracer's summaries of a float32 tensor in one read instead of torch's three.

   A summary needs a tensor's sum, sum of squares, min and max. torch computes them in three
   passes (aminmax, sum, dot), and inside a forward pass each pass reads memory the forward has
   just written and moved on from, a cost the tracer's benchmarks measure (README, Benchmarks).
   This reads every value once, eight at a time (AVX2), and a
   large tensor on the threads torch runs its own kernels on: each thread sums the part that it,
   or its neighbour, has just written (see use_threads_of).

   Sums and sums of squares are accumulated in float64 lanes: no float32 input can overflow them
   (n x (3.4e38)^2 stays below 1e308 for any n that fits in memory), so the additive mask full
   of finfo(float32).min needs no float64 copy. Min and max are float32 lanes, exact. Inf or NaN
   make the sums non-finite; the function then says so, and the caller uses torch's reductions,
   whose NaN propagation the min and max lanes here do not reproduce.

   Built as an optional extension (pyproject.toml): where it does not compile, or the CPU has no
   AVX2 and FMA, the import fails and the tracer uses torch's three passes. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if !(defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)))
#error "bertspec.tracing._moments needs GCC or Clang on x86; the tracer falls back to torch's reductions"
#endif

#include <dlfcn.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#define PREFETCH_AHEAD 256 /* values (1 KiB): a batch of logits, 86 MiB at batch 8, is read a quarter faster */

/* (sum, sum of squares, min, max) of x[0..n) into out (n may be 0); four independent float64
   accumulators per quantity, so that an addition never waits for the one before it. */
__attribute__((target("avx2,fma")))
static void moments(const float *x, size_t n, double *out) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0, q0 = s0, q1 = s0, q2 = s0, q3 = s0;
    __m256 low0 = _mm256_set1_ps(INFINITY), low1 = low0, high0 = _mm256_set1_ps(-INFINITY), high1 = high0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch((const char *)(x + i + PREFETCH_AHEAD), _MM_HINT_T0); /* a hint: never faults past the end */
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        __m256d a0 = _mm256_cvtps_pd(_mm256_castps256_ps128(a)), a1 = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
        __m256d b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(b)), b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
        s0 = _mm256_add_pd(s0, a0); s1 = _mm256_add_pd(s1, a1);
        s2 = _mm256_add_pd(s2, b0); s3 = _mm256_add_pd(s3, b1);
        q0 = _mm256_fmadd_pd(a0, a0, q0); q1 = _mm256_fmadd_pd(a1, a1, q1);
        q2 = _mm256_fmadd_pd(b0, b0, q2); q3 = _mm256_fmadd_pd(b1, b1, q3);
        low0 = _mm256_min_ps(a, low0); low1 = _mm256_min_ps(b, low1);
        high0 = _mm256_max_ps(a, high0); high1 = _mm256_max_ps(b, high1);
    }
    double sums[4], squares[4];
    float lows[8], highs[8];
    _mm256_storeu_pd(sums, _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3)));
    _mm256_storeu_pd(squares, _mm256_add_pd(_mm256_add_pd(q0, q1), _mm256_add_pd(q2, q3)));
    _mm256_storeu_ps(lows, _mm256_min_ps(low0, low1));
    _mm256_storeu_ps(highs, _mm256_max_ps(high0, high1));
    double total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    double square_total = (squares[0] + squares[1]) + (squares[2] + squares[3]);
    float low = INFINITY, high = -INFINITY;
    for (int k = 0; k < 8; k++) {
        low = lows[k] < low ? lows[k] : low;
        high = highs[k] > high ? highs[k] : high;
    }
    for (; i < n; i++) {  /* the last n mod 16 values */
        total += x[i];
        square_total += (double)x[i] * x[i];
        low = x[i] < low ? x[i] : low;
        high = x[i] > high ? x[i] : high;
    }
    out[0] = total; out[1] = square_total; out[2] = low; out[3] = high;
}

/* The OpenMP team torch runs its kernels on, reached through the GOMP interface of the runtime
   torch loaded (GNU libgomp; Intel's and LLVM's runtimes export it too). Between torch's
   operations its threads wait for work, and each holds in its cache the part of a tensor it
   has just written; a second thread of our own would compete with them for the cores instead.
   Unset until use_threads_of() finds it: every pass then runs on the calling thread. */
static void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned);
static int (*omp_thread_num)(void);
static int (*omp_num_threads)(void);

#define MAX_THREADS 64
#define PARALLEL_MIN 32768 /* values: torch's own grain size; below it a team costs more than it saves */

struct pass {
    const float *x;
    size_t n;
    int threads;                     /* the team's size, as its first thread saw it */
    double parts[MAX_THREADS][4];    /* each thread's four sums */
};

/* One thread's contiguous share of the values, a multiple of 16 long: thread t of T sums the
   t-th of T equal parts, as torch's parallel_for splits a range. */
static void sum_share(void *arg) {
    struct pass *p = arg;
    int threads = omp_num_threads(), t = omp_thread_num();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (t == 0) p->threads = threads;
    if (t >= threads) return;
    size_t share = ((p->n + threads - 1) / threads + 15) & ~(size_t)15;
    size_t start = (size_t)t * share < p->n ? (size_t)t * share : p->n;
    size_t end = start + share < p->n ? start + share : p->n;
    moments(p->x + start, end - start, p->parts[t]);
}

/* moments() on the team, the parts combined in thread order (the same order every time). */
static void team_moments(const float *x, size_t n, double *out) {
    struct pass p = {.x = x, .n = n, .threads = 0};
    gomp_parallel(sum_share, &p, 0, 0);
    out[0] = 0; out[1] = 0; out[2] = INFINITY; out[3] = -INFINITY;
    for (int t = 0; t < p.threads; t++) {
        out[0] += p.parts[t][0];
        out[1] += p.parts[t][1];
        out[2] = p.parts[t][2] < out[2] ? p.parts[t][2] : out[2];
        out[3] = p.parts[t][3] > out[3] ? p.parts[t][3] : out[3];
    }
}

/* use_threads_of(path) -> bool: run passes over PARALLEL_MIN values or more on the OpenMP team
   of the library at path, which must already be loaded (torch._C: its GOMP_parallel is the one
   torch's kernels use, searched through its dependencies). False, and passes stay on the
   calling thread, where the library or the symbols are not found. */
static PyObject *py_use_threads_of(PyObject *self, PyObject *path) {
    const char *name = PyUnicode_AsUTF8(path);
    if (name == NULL) return NULL;
    void *library = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
    if (library == NULL) Py_RETURN_FALSE;
    void *parallel = dlsym(library, "GOMP_parallel");
    void *thread_num = dlsym(library, "omp_get_thread_num");
    void *num_threads = dlsym(library, "omp_get_num_threads");
    dlclose(library); /* RTLD_NOLOAD took a reference to a library that stays loaded: give it back */
    if (!parallel || !thread_num || !num_threads) Py_RETURN_FALSE;
    *(void **)&gomp_parallel = parallel;
    *(void **)&omp_thread_num = thread_num;
    *(void **)&omp_num_threads = num_threads;
    Py_RETURN_TRUE;
}


/* moments(address, count, out_address) -> bool: count float32 values at address, their four sums
   written as float64 to out_address; False where a value is inf or NaN. The caller owns both
   buffers and keeps them alive; nothing here can check an address. */
static PyObject *py_moments(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "moments(address, count, out_address) takes 3 arguments");
        return NULL;
    }
    uintptr_t address = (uintptr_t)PyLong_AsVoidPtr(args[0]);
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    double *out = (double *)PyLong_AsVoidPtr(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (!address || !out || count < 1) {
        PyErr_SetString(PyExc_ValueError, "moments: null address or count < 1");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (gomp_parallel != NULL && count >= PARALLEL_MIN)
        team_moments((const float *)address, (size_t)count, out);
    else
        moments((const float *)address, (size_t)count, out);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(isfinite(out[0]) && isfinite(out[1]));
}

static PyMethodDef methods[] = {
    {"moments", (PyCFunction)(void (*)(void))py_moments, METH_FASTCALL,
     "moments(address, count, out_address) -> bool: sum, sum of squares, min, max of float32 values, in one pass"},
    {"use_threads_of", py_use_threads_of, METH_O,
     "use_threads_of(path) -> bool: sum large tensors on the OpenMP team of that loaded library (torch._C)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_moments", NULL, -1, methods};

PyMODINIT_FUNC PyInit__moments(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        PyErr_SetString(PyExc_ImportError, "bertspec.tracing._moments needs a CPU with AVX2 and FMA");
        return NULL;
    }
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && PyModule_AddIntConstant(created, "PARALLEL_MIN", PARALLEL_MIN) < 0) Py_CLEAR(created);
    return created;
}
