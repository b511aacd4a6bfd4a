/*
 * treason._logscan: the lines of a big log buffer that hold any of a few keys, in one pass.
 *
 * treason.logs.bulk finds the candidate lines of a kernel log (those holding a wording's
 * words, a repeat or rate-limit marker, logwatch's listing and rulers) and parses only those.
 * Searching for each key with bytes.find costs one pass over the buffer per key; this does
 * one pass for all of them (Wu-Manber: the last two bytes of a window as long as the
 * shortest key say how far it may move), then counts newlines with a vectorised loop, so
 * the caller also gets each candidate's line number.
 *
 * The pure-Python search in bulk.py is the definition; tests check the two agree.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_KEYS 32

/* Newlines in p[a:b]; 16 bytes at a time where SSE2 is there (byte counters summed every
 * 255 blocks, before they can wrap). */
static Py_ssize_t
count_newlines(const unsigned char *p, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t n = 0;
#ifdef __SSE2__
    const __m128i nl = _mm_set1_epi8('\n');
    while (b - a >= 16) {
        __m128i acc = _mm_setzero_si128();
        for (int k = 0; k < 255 && b - a >= 16; k++, a += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + a));
            acc = _mm_sub_epi8(acc, _mm_cmpeq_epi8(v, nl));
        }
        __m128i sums = _mm_sad_epu8(acc, _mm_setzero_si128());
        n += _mm_cvtsi128_si32(sums) + _mm_extract_epi16(sums, 4);
    }
#endif
    for (; a < b; a++)
        n += p[a] == '\n';
    return n;
}

/* Where the first two bytes of some key occur, 16 positions at a time: each distinct leading
 * pair is one bucket bit; a byte's bucket bits are looked up by its low and its high nibble
 * (pshufb), for the first and the second byte of the pair (Teddy, as in Hyperscan). With
 * one pair per bucket the lookup is exact. Up to 8 pairs in one bank of buckets, up to 16 in
 * two (twice the lookups); more fall back to the scalar search. */
#define BANK 8
#define BANKS 2

typedef struct {
    int banks; /* 0: not usable */
    unsigned char lo0[BANKS][16], hi0[BANKS][16], lo1[BANKS][16], hi1[BANKS][16];
} Pairs;

static void
pairs_init(Pairs *t, const unsigned char **key, Py_ssize_t nkeys)
{
    unsigned pair[BANK * BANKS];
    int npairs = 0;
    memset(t, 0, sizeof *t);
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        unsigned pk = (unsigned)key[k][0] << 8 | key[k][1];
        int b = 0;
        while (b < npairs && pair[b] != pk)
            b++;
        if (b == npairs) {
            if (npairs == BANK * BANKS) {
                t->banks = 0;
                return; /* more leading pairs than buckets: not usable */
            }
            pair[npairs++] = pk;
        }
        int bank = b / BANK;
        unsigned char bit = (unsigned char)(1u << (b % BANK));
        t->lo0[bank][key[k][0] & 15] |= bit;
        t->hi0[bank][key[k][0] >> 4] |= bit;
        t->lo1[bank][key[k][1] & 15] |= bit;
        t->hi1[bank][key[k][1] >> 4] |= bit;
    }
    t->banks = npairs > BANK ? 2 : 1;
}

static int
pairs_at(const Pairs *t, const unsigned char *p, Py_ssize_t i)
{
    for (int k = 0; k < t->banks; k++)
        if (t->lo0[k][p[i] & 15] & t->hi0[k][p[i] >> 4] & t->lo1[k][p[i + 1] & 15] &
            t->hi1[k][p[i + 1] >> 4])
            return 1;
    return 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <tmmintrin.h>
#define HAVE_PAIRS_SIMD 1

/* The buckets of one bank that the pairs starting at p[i..i+15] fall in. */
__attribute__((target("ssse3"))) static inline __m128i
pairs_bank(const Pairs *t, int k, __m128i a, __m128i b)
{
    const __m128i nib = _mm_set1_epi8(15);
    __m128i ma = _mm_and_si128(
        _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)t->lo0[k]), _mm_and_si128(a, nib)),
        _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)t->hi0[k]),
                         _mm_and_si128(_mm_srli_epi16(a, 4), nib)));
    __m128i mb = _mm_and_si128(
        _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)t->lo1[k]), _mm_and_si128(b, nib)),
        _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)t->hi1[k]),
                         _mm_and_si128(_mm_srli_epi16(b, 4), nib)));
    return _mm_and_si128(ma, mb);
}

__attribute__((target("ssse3"))) static Py_ssize_t
pairs_next(const Pairs *t, const unsigned char *p, Py_ssize_t i, Py_ssize_t end)
{
    const __m128i zero = _mm_setzero_si128();
    const int two = t->banks == 2;
    for (; i + 17 <= end; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 1));
        __m128i m = pairs_bank(t, 0, a, b);
        if (two)
            m = _mm_or_si128(m, pairs_bank(t, 1, a, b));
        int mask = _mm_movemask_epi8(_mm_cmpeq_epi8(m, zero)) ^ 0xFFFF;
        if (mask)
            return i + __builtin_ctz((unsigned)mask);
    }
    for (; i + 1 < end; i++) {
        if (pairs_at(t, p, i))
            return i;
    }
    return end;
}
#endif

static PyObject *
candidates(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end;
    PyObject *keys;
    int vector = 1;
    if (!PyArg_ParseTuple(args, "y*nnO!|p", &view, &start, &end, &PyTuple_Type, &keys, &vector))
        return NULL;
    const unsigned char *p = view.buf;
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys);
    if (start < 0 || end > view.len || start > end || nkeys < 1 || nkeys > MAX_KEYS) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad range or number of keys");
        return NULL;
    }
    const unsigned char *key[MAX_KEYS];
    Py_ssize_t klen[MAX_KEYS];
    Py_ssize_t m = 255; /* the window: the shortest key, at most 255 (the shift is a byte) */
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *item = PyTuple_GET_ITEM(keys, k);
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) < 2) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "keys must be bytes of at least 2");
            return NULL;
        }
        key[k] = (const unsigned char *)PyBytes_AS_STRING(item);
        klen[k] = PyBytes_GET_SIZE(item);
        if (klen[k] < m)
            m = klen[k];
    }
    /* Wu-Manber with 2-byte blocks: how far the window may move when its last two bytes
     * are a given pair (0: some key may start here, compare). */
    unsigned char *shift = PyMem_Malloc(65536);
    PyObject *found = PyList_New(0);
    if (shift == NULL || found == NULL) {
        PyMem_Free(shift);
        Py_XDECREF(found);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    memset(shift, (int)(m - 1), 65536);
    for (Py_ssize_t k = 0; k < nkeys; k++)
        for (Py_ssize_t j = 0; j + 1 < m; j++) {
            unsigned block = (unsigned)key[k][j] << 8 | key[k][j + 1];
            if (shift[block] > m - 2 - j)
                shift[block] = (unsigned char)(m - 2 - j);
        }
    Pairs pairs;
    pairs_init(&pairs, key, nkeys);
    int simd = 0;
#ifdef HAVE_PAIRS_SIMD
    simd = vector && pairs.banks && __builtin_cpu_supports("ssse3");
#endif
    Py_ssize_t newlines = 0, counted = start, i = start;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    while (i + m <= end) {
#ifdef HAVE_PAIRS_SIMD
        if (simd) {
            i = pairs_next(&pairs, p, i, end);
            if (i + m > end)
                break;
        } else
#endif
        {
            unsigned s = shift[(unsigned)p[i + m - 2] << 8 | p[i + m - 1]];
            if (s) {
                i += s;
                continue;
            }
        }
        int hit = 0;
        for (Py_ssize_t k = 0; k < nkeys && !hit; k++)
            hit = klen[k] <= end - i && memcmp(p + i, key[k], (size_t)klen[k]) == 0;
        if (!hit) {
            i++;
            continue;
        }
        Py_ssize_t line = i;
        while (line > start && p[line - 1] != '\n')
            line--;
        if (line < counted) /* a second key on a line already found */
            line = counted;
        newlines += count_newlines(p, counted, line);
        counted = line;
        Py_BLOCK_THREADS
        PyObject *entry = Py_BuildValue("(nn)", line, newlines);
        failed = entry == NULL || PyList_Append(found, entry) < 0;
        Py_XDECREF(entry);
        Py_UNBLOCK_THREADS
        if (failed)
            break;
        const unsigned char *nl = memchr(p + i, '\n', (size_t)(end - i));
        i = nl == NULL ? end : nl - p + 1;
    }
    if (!failed)
        newlines += count_newlines(p, counted, end);
    Py_END_ALLOW_THREADS
    PyMem_Free(shift);
    PyBuffer_Release(&view);
    if (failed) {
        Py_DECREF(found);
        return NULL;
    }
    return Py_BuildValue("(Nn)", found, newlines);
}

static PyMethodDef methods[] = {
    {"candidates", candidates, METH_VARARGS,
     "candidates(buffer, start, end, keys, vector=True)\n"
     "    -> ([(line_start, newlines_before), ...], newlines)\n\n"
     "Lines of buffer[start:end] holding any key: where each starts and how many newlines\n"
     "come before it in the range; and the newlines in the whole range. vector=False uses\n"
     "the scalar search even where SSSE3 is there (the two are tested against each other)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "treason._logscan",
    "Candidate lines of big log buffers in one pass (see treason.logs.bulk).", -1, methods,
};

PyMODINIT_FUNC
PyInit__logscan(void)
{
    return PyModule_Create(&module);
}
