/* Bodies in transit: output queues and the framing of each body piece.
 *
 * A body piece is never copied: the queue points at the bytes where they
 * were read (the source buffer) and consumes them from it only once they
 * are all written, so a request body not yet consumed can be sent again,
 * byte for byte, on a retry. */
#include "proxy/proxy_internal.h"

#include <errno.h>
#include <string.h>

int outq_flush(struct transport *t, struct outq *q, bool *wrote)
{
    while (!outq_empty(q)) {
        struct iovec iov[4];
        int n = 0;
        if (buf_len(&q->gen))
            iov[n++] = (struct iovec){buf_head(&q->gen), buf_len(&q->gen)};
        if (q->pre_off < q->pre_len)
            iov[n++] = (struct iovec){q->pre + q->pre_off, (size_t)(q->pre_len - q->pre_off)};
        if (q->data_len)
            iov[n++] = (struct iovec){(void *)q->data, q->data_len};
        if (q->post_off < q->post_len)
            iov[n++] = (struct iovec){q->post + q->post_off, (size_t)(q->post_len - q->post_off)};
        if (n == 0) {
            /* only the consume of framing bytes without data is left */
            buf_consume(q->src, q->src_consume);
            q->src_consume = 0;
            break;
        }
        if (!t->writable)
            return 0;
        ssize_t w = transport_writev(t, iov, n);
        if (w == -EAGAIN)
            return 0;
        if (w < 0)
            return (int)w;
        if (w > 0 && wrote)
            *wrote = true;
        size_t left = (size_t)w;
        size_t g = buf_len(&q->gen);
        if (g) {
            size_t k = left < g ? left : g;
            buf_consume(&q->gen, k);
            left -= k;
        }
        size_t pre = (size_t)(q->pre_len - q->pre_off);
        if (pre && left) {
            size_t k = left < pre ? left : pre;
            q->pre_off += (uint8_t)k;
            left -= k;
        }
        if (q->data_len && left) {
            size_t k = left < q->data_len ? left : q->data_len;
            q->data += k;
            q->data_len -= k;
            left -= k;
        }
        if (left)
            q->post_off += (uint8_t)left;
        if (q->data_len == 0 && q->post_off == q->post_len && q->pre_off == q->pre_len &&
            buf_len(&q->gen) == 0 && q->src_consume) {
            buf_consume(q->src, q->src_consume);
            q->src_consume = 0;
        }
    }
    q->pre_len = q->pre_off = 0;
    q->post_len = q->post_off = 0;
    return 1;
}

void outq_drop_body(struct outq *q)
{
    q->pre_len = q->pre_off = 0;
    q->data = NULL;
    q->data_len = 0;
    q->src_consume = 0;
    q->post_len = q->post_off = 0;
}

int body_prepare(struct body *b, struct buf *src, bool src_eof, struct outq *q,
                 enum http_error *err)
{
    size_t avail = buf_len(src);
    size_t data_len = 0, consume = 0;
    uint64_t data_bytes = 0;
    switch (b->framing) {
    case HTTP_FRAMING_NONE:
        b->done = true;
        break;
    case HTTP_FRAMING_LENGTH:
        data_len = avail < b->left ? avail : (size_t)b->left;
        consume = data_len;
        data_bytes = data_len;
        b->left -= data_len;
        b->done = b->left == 0;
        break;
    case HTTP_FRAMING_UNTIL_CLOSE:
        data_len = consume = avail;
        data_bytes = data_len;
        b->done = src_eof;
        break;
    case HTTP_FRAMING_CHUNKED: {
        if (!avail)
            break;
        char *data = buf_head(src);
        if (b->stage) {
            /* q holds no body: the stage is free for this piece */
            if (buf_acquire(b->stage) < 0) {
                *err = HTTP_OK;
                return -1;
            }
            b->stage->start = b->stage->end = 0;
            memcpy(b->stage->data, data, avail);
            data = b->stage->data;
        }
        size_t len = avail;
        ssize_t rc = http_chunked_decode(&b->chunked, data, &len, err);
        if (rc == -2)
            return -1;
        data_len = len;
        data_bytes = len;
        consume = rc > 0 ? (size_t)rc : avail;
        b->done = rc > 0;
        break;
    }
    }
    b->bytes += data_bytes;
    q->data = b->framing == HTTP_FRAMING_CHUNKED && b->stage ? b->stage->data : buf_head(src);
    q->data_len = data_len;
    q->src = src;
    q->src_consume = consume;
    q->pre_len = q->pre_off = 0;
    q->post_len = q->post_off = 0;
    if (b->coding == BODY_RECHUNK) {
        if (data_len) {
            q->pre_len = (uint8_t)http_chunk_header(q->pre, data_len);
            memcpy(q->post, "\r\n", 2);
            q->post_len = 2;
        }
        if (b->done) {
            memcpy(q->post + q->post_len, "0\r\n\r\n", 5);
            q->post_len += 5;
        }
    }
    return 0;
}
