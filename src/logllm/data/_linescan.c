/*
 * logllm.data._linescan: the two byte passes of `logllm prepare` that numpy cannot do in one go.
 *
 * scan_lines(data, hash_bits=64, simd=True) -> (n_lines, is_ascii, codes, starts, first, distinct)
 *     Splits ``data`` (whole lines, each ending in "\n"; a last line without one counts too) into
 *     lines and groups equal *digit-normalised* lines (every ASCII digit read as "0"; one trailing
 *     "\r" is not part of a line), in one pass and without copying the text. Returns
 *       n_lines   the number of lines;
 *       is_ascii  whether every byte of ``data`` is below 128;
 *       codes     int32 per line: the index of its distinct line;
 *       starts    int64 per line: the offset of its first byte in ``data``;
 *       first     int32 per distinct line: the index of the first line equal to it;
 *       distinct  bytes: the distinct normalised lines in order of first appearance, each followed by
 *                 "\n" (the arrays come as ``bytes`` in native byte order, for numpy.frombuffer).
 *     ``hash_bits`` < 64 keeps only that many bits of each line's hash, so that tests can force the
 *     collisions that the byte comparison behind every hash match resolves. On x86-64 CPUs with AVX2
 *     (checked at run time) lines are normalised and hashed 32 bytes a step; ``simd=False`` takes the
 *     portable loop (8 bytes a step) instead. The hash differs, the result does not.
 *
 * block_keys(data, starts, codes, ptr, digit_at, digits, negative) -> (lines, keys) | None
 *     HDFS block ids as signed 64-bit integers. Distinct line c holds matches ptr[c] .. ptr[c+1]-1;
 *     match j's digits start ``digit_at[j]`` bytes into the line and are ``digits[j]`` long, and
 *     ``negative[j]`` says whether a "-" comes before them. For every line i and every match of its
 *     distinct line: ``lines`` (int32) = i and ``keys`` (int64) = the id's value, negated after a
 *     "-"; an id a line names twice is listed once for that line. None when an id is not the decimal
 *     spelling of its integer (a leading zero, "-0", a value past int64, a non-digit), so that equal
 *     keys mean equal ids and the caller can fall back to comparing strings. Digits are read 8 at a
 *     time (SWAR) on little-endian machines.
 *
 * Both release the GIL while they run. Every index read from the arguments is checked against the
 * sizes of the buffers (ValueError), so wrong arguments cannot read outside them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

/* Each ASCII digit byte of w replaced by "0" (SWAR, exact per byte: no borrow crosses a byte). */
static inline uint64_t zero_digits(uint64_t w)
{
    uint64_t t = w ^ (0x30 * ONES);                  /* a digit becomes 0..9, nothing else does */
    uint64_t ten_or_more = (t | HIGH) - 10 * ONES;   /* per byte: high bit set iff (t & 0x7f) >= 10 */
    uint64_t digit = ~(ten_or_more | t) & HIGH;      /* high bit set iff t < 10 */
    uint64_t bytes = (digit >> 7) * 0xFF;
    return (w & ~bytes) | ((0x30 * ONES) & bytes);
}

static inline uint64_t finish_hash(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ULL;
    h ^= h >> 29;
    return h;
}

/* A growable array of fixed-size items (malloc'd). */
typedef struct {
    char *data;
    size_t len, cap, item;
} Vec;

static int vec_reserve(Vec *v, size_t more)
{
    if (v->len + more <= v->cap)
        return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < v->len + more)
        cap *= 2;
    char *p = realloc(v->data, cap * v->item);
    if (!p)
        return -1;
    v->data = p;
    v->cap = cap;
    return 0;
}

typedef struct {
    uint64_t hash;
    int32_t code; /* -1: empty slot */
} Slot;

typedef struct {
    Vec codes, starts, first; /* int32 per line, int64 per line, int32 per distinct line */
    Vec text;                 /* the distinct normalised lines, each followed by "\n" */
    Vec text_at;              /* int64 per distinct line: where it starts in text */
    Slot *slots;
    size_t n_slots; /* a power of two, at least twice the number of distinct lines */
    unsigned char *scratch;
    size_t scratch_cap;
    uint64_t hash_mask;
    uint64_t all_bytes; /* the OR of every byte (ASCII check) */
    const unsigned char *limit; /* the end of the data: no load reaches past it */
    int simd;                   /* use the AVX2 loop (normalise_line_avx2) */
} Scan;

static int scan_grow_table(Scan *s)
{
    size_t n = s->n_slots ? s->n_slots * 2 : 1024;
    Slot *slots = malloc(n * sizeof(Slot));
    if (!slots)
        return -1;
    for (size_t i = 0; i < n; i++)
        slots[i].code = -1;
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].code < 0)
            continue;
        size_t k = s->slots[i].hash & (n - 1);
        while (slots[k].code >= 0)
            k = (k + 1) & (n - 1);
        slots[k] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->n_slots = n;
    return 0;
}

#define K1 0x9E3779B97F4A7C15ULL
#define K2 0xC2B2AE3D27D4EB4FULL

/* The digit-normalised bytes of one line go to s->scratch; returns their hash. Two hash lanes (even
 * and odd words) halve the chain of dependent multiplications that bounds the loop. */
static uint64_t normalise_line(Scan *s, const unsigned char *p, size_t len)
{
    unsigned char *out = s->scratch;
    uint64_t a = 0x243F6A8885A308D3ULL ^ len, b = 0x13198A2E03707344ULL, all = 0;
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
        uint64_t w, v;
        memcpy(&w, p + i, 8);
        memcpy(&v, p + i + 8, 8);
        all |= w | v;
        w = zero_digits(w);
        v = zero_digits(v);
        memcpy(out + i, &w, 8);
        memcpy(out + i + 8, &v, 8);
        a = (a + w) * K1;
        b = (b + v) * K2;
    }
    for (; i < len; i += 8) {
        uint64_t w = 0;
        size_t k = len - i < 8 ? len - i : 8;
        memcpy(&w, p + i, k);
        all |= w;
        w = zero_digits(w); /* zero bytes past the end stay zero */
        memcpy(out + i, &w, k);
        a = (a + w) * K1;
    }
    s->all_bytes |= all;
    return finish_hash(a ^ (b >> 1) ^ (b << 63)) & s->hash_mask;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2 1

/* Per 32-byte block of a line (its index mod 8): the key of the NH hash step below. */
static const uint64_t NH_KEYS[8][4] = {
    {0xbe4ba423396cfeb8ULL, 0x1cad21f72c81017cULL, 0xdb979083e96dd4deULL, 0x1f67b3b7a4a44072ULL},
    {0x78e5c0cc4ee679cbULL, 0x2172ffcc7dd05a82ULL, 0x8e2443f7744608b8ULL, 0x4c263a81e69035e0ULL},
    {0xcb00c391bb52283cULL, 0xa32e531b8b65d088ULL, 0x4ef90da297486471ULL, 0xd8acdea946ef1938ULL},
    {0x3f349ce33f76faa8ULL, 0x1d4f0bc7c7bbdcf9ULL, 0x3159b4cd4be0518aULL, 0x647378d9c97e9fc8ULL},
    {0xc3ebd33483acc5eaULL, 0xeb6313faffa081c5ULL, 0x49daf0b751dd0d17ULL, 0x9e68d429265516d3ULL},
    {0xfca1477d58be162bULL, 0xce31d07ad1b8f88fULL, 0x280416958f3acb45ULL, 0x7e404bbbcafbd7afULL},
    {0x81dad14f2b3e1b5cULL, 0x3ee64fb2f3c1d7e2ULL, 0x9b6b58d5e0c1a0f7ULL, 0x5d5c4a3a2e6f9b21ULL},
    {0xa7c1e39f4b8d2605ULL, 0x6f0e8d3c9a5b7e41ULL, 0xd2b4f6a8c0e1937bULL, 0x1b9e3f7d5c2a8e64ULL},
};

/* zero_digits on 32 bytes: a digit byte minus its distance from "0". */
__attribute__((target("avx2"))) static inline __m256i zero_digits_avx2(__m256i v)
{
    __m256i t = _mm256_sub_epi8(v, _mm256_set1_epi8('0'));
    __m256i digit = _mm256_cmpeq_epi8(_mm256_min_epu8(t, _mm256_set1_epi8(9)), t);
    return _mm256_sub_epi8(v, _mm256_and_si256(t, digit));
}

/* One step of an NH hash (as in UMAC and XXH3): independent 32x32-bit products, so the loop is not
 * bound by a chain of multiplications; adding the block itself keeps what a zero product loses. */
__attribute__((target("avx2"))) static inline __m256i nh_step(__m256i acc, __m256i x, size_t block)
{
    __m256i xk = _mm256_xor_si256(x, _mm256_loadu_si256((const __m256i *)NH_KEYS[block & 7]));
    acc = _mm256_add_epi64(acc, _mm256_mul_epu32(xk, _mm256_srli_epi64(xk, 32)));
    return _mm256_add_epi64(acc, _mm256_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
}

/* normalise_line with AVX2: 32 bytes a step; the last, partial block is masked to the line (loaded
 * from a zero-padded copy where 32 bytes would reach past the data). Same scratch bytes, another hash. */
__attribute__((target("avx2"))) static uint64_t normalise_line_avx2(Scan *s, const unsigned char *p, size_t len)
{
    unsigned char *out = s->scratch;
    __m256i acc = _mm256_set_epi64x((long long)len, 0x243F6A8885A308D3LL, 0x13198A2E03707344LL, 0x452821E638D01377LL);
    __m256i all = _mm256_setzero_si256();
    size_t i = 0, block = 0;
    for (; i + 32 <= len; i += 32, block++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + i));
        all = _mm256_or_si256(all, v);
        __m256i x = zero_digits_avx2(v);
        _mm256_storeu_si256((__m256i *)(out + i), x);
        acc = nh_step(acc, x, block);
    }
    if (i < len) {
        size_t r = len - i;
        __m256i v;
        if (p + i + 32 <= s->limit) {
            v = _mm256_loadu_si256((const __m256i *)(p + i));
        } else {
            unsigned char tail[32] = {0};
            memcpy(tail, p + i, r);
            v = _mm256_loadu_si256((const __m256i *)tail);
        }
        __m256i index = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                                         21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
        v = _mm256_and_si256(v, _mm256_cmpgt_epi8(_mm256_set1_epi8((char)r), index)); /* the line's r bytes */
        all = _mm256_or_si256(all, v);
        __m256i x = zero_digits_avx2(v); /* (zero bytes stay zero) */
        _mm256_storeu_si256((__m256i *)(out + i), x);
        acc = nh_step(acc, x, block);
    }
    if (_mm256_movemask_epi8(all))
        s->all_bytes |= 0x80;
    uint64_t lane[4];
    _mm256_storeu_si256((__m256i *)lane, acc);
    uint64_t h = lane[0];
    for (int k = 1; k < 4; k++)
        h = (h ^ (h >> 29)) * K1 + lane[k];
    return finish_hash(h) & s->hash_mask;
}
#endif

/* The code of the distinct line now in s->scratch (len bytes, hash h), adding it if new. */
static int32_t distinct_code(Scan *s, uint64_t h, size_t len, int32_t line)
{
    size_t mask = s->n_slots - 1, k = h & mask;
    const int64_t *at = (const int64_t *)s->text_at.data;
    for (;; k = (k + 1) & mask) {
        Slot *slot = &s->slots[k];
        if (slot->code < 0)
            break;
        if (slot->hash == h) {
            int32_t c = slot->code;
            size_t c_len = (size_t)(at[c + 1] - at[c]) - 1;
            if (c_len == len && memcmp(s->text.data + at[c], s->scratch, len) == 0)
                return c;
        }
    }
    int32_t c = (int32_t)s->first.len;
    if (vec_reserve(&s->first, 1) || vec_reserve(&s->text, len + 1) || vec_reserve(&s->text_at, 1))
        return -1;
    ((int32_t *)s->first.data)[s->first.len++] = line;
    memcpy(s->text.data + s->text.len, s->scratch, len);
    s->text.len += len;
    s->text.data[s->text.len++] = '\n';
    ((int64_t *)s->text_at.data)[s->text_at.len++] = (int64_t)s->text.len;
    s->slots[k].hash = h;
    s->slots[k].code = c;
    if (2 * s->first.len > s->n_slots && scan_grow_table(s))
        return -1;
    return c;
}

/* 0 on success, -1 out of memory, -2 more lines than int32 holds. */
static int scan_run(Scan *s, const unsigned char *data, size_t size)
{
    size_t pos = 0;
    if (vec_reserve(&s->text_at, 1))
        return -1;
    ((int64_t *)s->text_at.data)[s->text_at.len++] = 0;
    while (pos < size) {
        const unsigned char *p = data + pos;
        const unsigned char *nl = memchr(p, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size; /* the line is data[pos:end] */
        size_t len = end - pos;
        if (s->codes.len >= INT32_MAX)
            return -2;
        if (len > 0 && p[len - 1] == '\r')
            len--;
        if (len + 32 > s->scratch_cap) {
            size_t cap = s->scratch_cap ? s->scratch_cap : 4096;
            while (cap < len + 32)
                cap *= 2;
            unsigned char *q = realloc(s->scratch, cap);
            if (!q)
                return -1;
            s->scratch = q;
            s->scratch_cap = cap;
        }
#ifdef HAVE_AVX2
        uint64_t h = s->simd ? normalise_line_avx2(s, p, len) : normalise_line(s, p, len);
#else
        uint64_t h = normalise_line(s, p, len);
#endif
        int32_t c = distinct_code(s, h, len, (int32_t)s->codes.len);
        if (c < 0 || vec_reserve(&s->codes, 1) || vec_reserve(&s->starts, 1))
            return -1;
        ((int64_t *)s->starts.data)[s->starts.len++] = (int64_t)pos;
        ((int32_t *)s->codes.data)[s->codes.len++] = c;
        pos = end + 1;
    }
    return 0;
}

static void scan_free(Scan *s)
{
    free(s->codes.data);
    free(s->starts.data);
    free(s->first.data);
    free(s->text.data);
    free(s->text_at.data);
    free(s->slots);
    free(s->scratch);
}

static PyObject *vec_bytes(const Vec *v)
{
    return PyBytes_FromStringAndSize(v->data ? v->data : "", (Py_ssize_t)(v->len * v->item));
}

/* Whether this CPU runs the AVX2 loop (checked at run time: the module is built for any x86-64). */
static int have_avx2(void)
{
#ifdef HAVE_AVX2
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

static PyObject *simd_available(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(have_avx2());
}

static PyObject *scan_lines(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"data", "hash_bits", "simd", NULL};
    Py_buffer buf;
    int hash_bits = 64, simd = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|ip:scan_lines", keywords, &buf, &hash_bits, &simd))
        return NULL;
    if (hash_bits < 1 || hash_bits > 64) {
        PyBuffer_Release(&buf);
        return PyErr_Format(PyExc_ValueError, "hash_bits must be 1..64, not %d", hash_bits);
    }
    Scan s;
    memset(&s, 0, sizeof s);
    s.codes.item = s.first.item = sizeof(int32_t);
    s.starts.item = s.text_at.item = sizeof(int64_t);
    s.text.item = 1;
    s.hash_mask = hash_bits == 64 ? ~0ULL : (1ULL << hash_bits) - 1;
    s.limit = (const unsigned char *)buf.buf + buf.len;
    s.simd = simd && have_avx2();
    int rc = scan_grow_table(&s) ? -1 : 0;
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = scan_run(&s, (const unsigned char *)buf.buf, (size_t)buf.len);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&buf);
    PyObject *result = NULL;
    if (rc == -1)
        PyErr_NoMemory();
    else if (rc == -2)
        PyErr_SetString(PyExc_ValueError, "scan_lines: more than 2**31 - 1 lines in one buffer");
    else
        result = Py_BuildValue("nNNNNN", (Py_ssize_t)s.codes.len, PyBool_FromLong((s.all_bytes & HIGH) == 0),
                               vec_bytes(&s.codes), vec_bytes(&s.starts), vec_bytes(&s.first), vec_bytes(&s.text));
    scan_free(&s);
    return result;
}

/* A read-only buffer of n items of `item` bytes each; -1 with an exception set if not. */
static int get_array(PyObject *obj, Py_buffer *view, size_t item, const char *name, Py_ssize_t *n)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % (Py_ssize_t)item) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "block_keys: %s holds %zd bytes, not a whole number of %zu-byte items",
                     name, view->len, item);
        return -1;
    }
    *n = view->len / (Py_ssize_t)item;
    return 0;
}

enum { KEYS_OK = 0, KEYS_NOT_INTEGER = 1, KEYS_BAD_ARGS = 2 };

/* The value of 8 ASCII digits loaded little-endian (first digit in the lowest byte), in a few
 * multiplications (pairs, quads, then the octet); -1 if a byte is not a digit. */
static inline int64_t eight_digits(uint64_t w)
{
    if (((w + 0x4646464646464646ULL) | (w - 0x3030303030303030ULL)) & HIGH)
        return -1;
    w -= 0x3030303030303030ULL;
    w = (w * 10) + (w >> 8);
    w = (((w & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
         (((w >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
    return (int64_t)w;
}

/* The value of the nd (1..8) digits that end at q + nd, read as one word (bytes before the digits
 * count as "0"); -1 if one is not a digit. Needs q + nd - 8 >= the start of the data. */
static inline int64_t up_to_eight_digits(const unsigned char *q, int nd)
{
    uint64_t w;
    memcpy(&w, q + nd - 8, 8);
    if (nd < 8) {
        uint64_t before = (1ULL << (8 * (8 - nd))) - 1; /* the low bytes: the ones before the digits */
        w = (w & ~before) | (0x3030303030303030ULL & before);
    }
    return eight_digits(w);
}

/* The value of the nd (1..19) ASCII digits at data[at:at + nd], or -1 (a non-digit, or past int64).
 * Whole words are read where the 8 or 16 bytes before the last digit's end are inside the data. */
static int64_t parse_digits(const unsigned char *data, Py_ssize_t at, int nd)
{
    const unsigned char *q = data + at;
    int little_endian = 1;
    if (*(const unsigned char *)&little_endian == 1 && at + nd - (nd > 8 ? 16 : 8) >= 0) {
        int64_t lo = up_to_eight_digits(q + (nd > 8 ? nd - 8 : 0), nd > 8 ? 8 : nd);
        if (nd <= 8 || lo < 0)
            return lo;
        int64_t mid = up_to_eight_digits(q + (nd > 16 ? nd - 16 : 0), nd > 16 ? 8 : nd - 8);
        if (mid < 0)
            return -1;
        uint64_t v = (uint64_t)mid * 100000000ULL + (uint64_t)lo;
        if (nd > 16) {
            uint64_t top = 0;
            for (int t = 0; t < nd - 16; t++) {
                unsigned d = (unsigned)q[t] - '0';
                if (d > 9)
                    return -1;
                top = top * 10 + d;
            }
            v += top * 10000000000000000ULL; /* at most 999 * 10**16 + 10**16: below 2**64 */
        }
        return v > (uint64_t)INT64_MAX ? -1 : (int64_t)v;
    }
    uint64_t v = 0;
    for (int t = 0; t < nd; t++) {
        unsigned d = (unsigned)q[t] - '0';
        if (d > 9)
            return -1;
        v = v * 10 + d; /* at most 19 digits: below 2**64 */
    }
    return v > (uint64_t)INT64_MAX ? -1 : (int64_t)v;
}

/* The number of (line, match) pairs; -1 if an index in the arguments is out of range. */
static Py_ssize_t keys_total(const int32_t *codes, Py_ssize_t n, const int64_t *ptr, Py_ssize_t n_distinct,
                             Py_ssize_t n_matches)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t c = 0; c < n_distinct; c++)
        if (ptr[c] < 0 || ptr[c] > ptr[c + 1] || ptr[c + 1] > n_matches)
            return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (codes[i] < 0 || codes[i] >= n_distinct)
            return -1;
        total += ptr[codes[i] + 1] - ptr[codes[i]];
    }
    return total;
}

/* Fills lines and keys (room for keys_total pairs) and sets *count to the pairs kept. */
static int keys_run(const unsigned char *data, Py_ssize_t size, const int64_t *starts, const int32_t *codes,
                    Py_ssize_t n, const int64_t *ptr, const int32_t *digit_at, const int32_t *digits,
                    const uint8_t *negative, int32_t *lines, int64_t *keys, Py_ssize_t *count)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t line_first = k;
        for (int64_t j = ptr[codes[i]]; j < ptr[codes[i] + 1]; j++) {
            int32_t nd = digits[j];
            int64_t at = starts[i] + digit_at[j];
            if (nd < 1 || digit_at[j] < 0 || starts[i] < 0 || at + nd > size)
                return KEYS_BAD_ARGS;
            const unsigned char *q = data + at;
            if (nd > 19 || (nd > 1 && q[0] == '0'))
                return KEYS_NOT_INTEGER;
            int64_t v = parse_digits(data, at, nd);
            if (v < 0 || (negative[j] && v == 0))
                return KEYS_NOT_INTEGER;
            int64_t key = negative[j] ? -v : v;
            int repeat = 0;
            for (Py_ssize_t t = line_first; t < k && !repeat; t++)
                repeat = keys[t] == key;
            if (repeat)
                continue;
            lines[k] = (int32_t)i;
            keys[k] = key;
            k++;
        }
    }
    *count = k;
    return KEYS_OK;
}

static PyObject *block_keys(PyObject *self, PyObject *args)
{
    PyObject *objs[7];
    if (!PyArg_UnpackTuple(args, "block_keys", 7, 7, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5],
                           &objs[6]))
        return NULL;
    static const char *names[7] = {"data", "starts", "codes", "ptr", "digit_at", "digits", "negative"};
    static const size_t items[7] = {1, 8, 4, 8, 4, 4, 1};
    Py_buffer views[7];
    Py_ssize_t lens[7], count = 0, total;
    int got = 0, rc;
    PyObject *lines = NULL, *keys = NULL, *result = NULL;
    for (; got < 7; got++)
        if (get_array(objs[got], &views[got], items[got], names[got], &lens[got]) < 0)
            goto done;
    if (lens[1] != lens[2] || lens[3] < 1 || lens[4] != lens[5] || lens[4] != lens[6]) {
        PyErr_SetString(PyExc_ValueError, "block_keys: starts/codes, or digit_at/digits/negative, differ in "
                                          "length, or ptr is empty");
        goto done;
    }
    total = keys_total(views[2].buf, lens[2], views[3].buf, lens[3] - 1, lens[4]);
    if (total < 0) {
        PyErr_SetString(PyExc_ValueError, "block_keys: an index in the arguments points outside the data");
        goto done;
    }
    /* The results are written straight into new bytes objects (no copy of a malloc'd array: each fresh
     * page costs a fault), then cut to the pairs kept. */
    lines = PyBytes_FromStringAndSize(NULL, total * (Py_ssize_t)sizeof(int32_t));
    keys = PyBytes_FromStringAndSize(NULL, total * (Py_ssize_t)sizeof(int64_t));
    if (!lines || !keys)
        goto done;
    Py_BEGIN_ALLOW_THREADS
    rc = keys_run(views[0].buf, lens[0], views[1].buf, views[2].buf, lens[1], views[3].buf, views[4].buf,
                  views[5].buf, views[6].buf, (int32_t *)PyBytes_AS_STRING(lines),
                  (int64_t *)PyBytes_AS_STRING(keys), &count);
    Py_END_ALLOW_THREADS
    if (rc == KEYS_NOT_INTEGER) {
        result = Py_NewRef(Py_None);
    } else if (rc != KEYS_OK) {
        PyErr_SetString(PyExc_ValueError, "block_keys: an index in the arguments points outside the data");
    } else if (_PyBytes_Resize(&lines, count * (Py_ssize_t)sizeof(int32_t)) == 0 &&
               _PyBytes_Resize(&keys, count * (Py_ssize_t)sizeof(int64_t)) == 0) {
        result = Py_BuildValue("OO", lines, keys);
    }
done:
    Py_XDECREF(lines);
    Py_XDECREF(keys);
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_lines", (PyCFunction)(void (*)(void))scan_lines, METH_VARARGS | METH_KEYWORDS,
     "scan_lines(data, hash_bits=64, simd=True) -> (n_lines, is_ascii, codes, starts, first, distinct)."},
    {"simd_available", simd_available, METH_NOARGS, "Whether scan_lines can use its AVX2 loop on this CPU."},
    {"block_keys", block_keys, METH_VARARGS,
     "block_keys(data, starts, codes, ptr, digit_at, digits, negative) -> (lines, keys) | None; see the module."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_linescan",
    "Line grouping and HDFS block ids for `logllm prepare`, in C (see _linescan.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__linescan(void)
{
    return PyModule_Create(&module);
}
