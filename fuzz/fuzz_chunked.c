/* libFuzzer harness for the chunked decoder.
 *
 * The first byte seeds how the rest is split into pieces; the rest is a
 * chunked body (and maybe what follows it). The body is decoded whole, then
 * again in pieces, each piece in its own exact-size buffer as a socket read
 * would deliver it. Both must agree on the outcome (complete, incomplete or
 * the same error), on the input consumed and on every data byte; bytes after
 * the end of the message must be left untouched. Any violation aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
    ssize_t result;
    enum http_error err;
    size_t consumed;
    char *data;
    size_t data_len;
};

static void check(bool ok)
{
    if (!ok)
        abort();
}

/* Decode msg[0..n) split after each offset in cuts[0..ncuts) (ascending). */
static void decode(const char *msg, size_t n, const size_t *cuts, size_t ncuts, struct outcome *out)
{
    struct http_chunked d;
    http_chunked_init(&d);
    out->result = HTTP_INCOMPLETE;
    out->err = HTTP_OK;
    out->consumed = 0;
    out->data_len = 0;
    out->data = malloc(n ? n : 1);
    check(out->data != NULL);
    size_t start = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t stop = i < ncuts ? cuts[i] : n;
        size_t len = stop - start;
        char *buf = malloc(len ? len : 1);
        check(buf != NULL);
        memcpy(buf, msg + start, len);
        size_t data_len = len;
        enum http_error err = HTTP_ERR__COUNT;
        ssize_t r = http_chunked_decode(&d, buf, &data_len, &err);
        check(data_len <= len);
        memcpy(out->data + out->data_len, buf, data_len);
        out->data_len += data_len;
        out->result = r;
        out->err = err;
        if (r > 0) {
            check((size_t)r <= len && err == HTTP_OK);
            check(data_len <= (size_t)r);
            /* what follows the message is where it was */
            check(memcmp(buf + r, msg + start + (size_t)r, len - (size_t)r) == 0);
            out->consumed = start + (size_t)r;
        } else if (r == HTTP_INCOMPLETE) {
            check(err == HTTP_OK);
        } else {
            check(r == -2 && (err == HTTP_ERR_BAD_CHUNK || err == HTTP_ERR_CHUNK_TOO_LARGE));
        }
        free(buf);
        if (r != HTTP_INCOMPLETE)
            return;
        start = stop;
    }
}

static void check_same(const struct outcome *a, const struct outcome *b)
{
    check((a->result > 0) == (b->result > 0));
    check(a->result > 0 || a->result == b->result);
    check(a->err == b->err);
    check(a->consumed == b->consumed);
    check(a->data_len == b->data_len);
    check(a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t seed = data[0] * 2654435761u + 1;
    const char *msg = (const char *)data + 1;
    size_t n = size - 1;

    struct outcome whole, split;
    decode(msg, n, NULL, 0, &whole);

    /* pseudo-random cuts, biased to small pieces so framing bytes get split */
    size_t cuts[64], ncuts = 0, pos = 0;
    while (ncuts < 64) {
        seed = seed * 1103515245u + 12345u;
        pos += (seed >> 16) % ((seed & 0x100) ? 4 : 64);
        if (pos > n)
            break;
        cuts[ncuts++] = pos;
    }
    decode(msg, n, cuts, ncuts, &split);
    check_same(&whole, &split);
    free(split.data);

    /* byte by byte, for inputs short enough to keep the fuzzer fast */
    if (n <= 256) {
        size_t every[256];
        for (size_t i = 0; i + 1 < n; i++)
            every[i] = i + 1;
        decode(msg, n, every, n ? n - 1 : 0, &split);
        check_same(&whole, &split);
        free(split.data);
    }

    /* what the proxy writes when it re-chunks decoded data reads back as
     * that data */
    if (whole.result > 0) {
        char *re = malloc(whole.data_len + 32);
        check(re != NULL);
        size_t k = http_chunk_header(re, whole.data_len);
        memcpy(re + k, whole.data, whole.data_len);
        k += whole.data_len;
        if (whole.data_len) {
            memcpy(re + k, "\r\n", 2);
            k += 2;
            k += http_chunk_header(re + k, 0);
        }
        memcpy(re + k, "\r\n", 2);
        k += 2;
        struct outcome back;
        decode(re, k, NULL, 0, &back);
        check(back.result == (ssize_t)k && back.data_len == whole.data_len);
        check(whole.data_len == 0 || memcmp(back.data, whole.data, whole.data_len) == 0);
        free(back.data);
        free(re);
    }
    free(whole.data);
    return 0;
}
