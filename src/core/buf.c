/* Fixed-size I/O blocks from a per-thread free list. Idle connections hold
 * none, so thousands of idle keep-alive clients cost only their structs. */
#include "core/core.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

/* Blocks kept for reuse per thread; beyond this they go back to malloc, and
 * buf_trim_free_list() hands freed heap pages back to the kernel. 32 x 64 KiB
 * = 2 MiB per worker is enough to absorb a burst without holding RSS. */
#define BUF_FREE_RESERVE 32

struct free_block {
    struct free_block *next;
};

static __thread struct free_block *free_list;
static __thread size_t free_count;
static __thread size_t freed_since_trim;

int buf_acquire(struct buf *b)
{
    if (b->data)
        return 0;
    if (free_list) {
        b->data = (char *)free_list;
        free_list = free_list->next;
        free_count--;
    } else {
        b->data = malloc(BUF_SIZE);
        if (!b->data)
            return -ENOMEM;
    }
    b->start = b->end = 0;
    return 0;
}

void buf_release(struct buf *b)
{
    if (!b->data)
        return;
    if (free_count < BUF_FREE_RESERVE) {
        struct free_block *fb = (struct free_block *)b->data;
        fb->next = free_list;
        free_list = fb;
        free_count++;
    } else {
        free(b->data);
        freed_since_trim++;
    }
    b->data = NULL;
    b->start = b->end = 0;
}

void buf_compact(struct buf *b)
{
    if (b->start == 0)
        return;
    size_t n = buf_len(b);
    if (n)
        memmove(b->data, b->data + b->start, n);
    b->start = 0;
    b->end = (uint32_t)n;
}

bool buf_append(struct buf *b, const void *p, size_t n)
{
    if (n > buf_room(b)) {
        buf_compact(b);
        if (n > buf_room(b))
            return false;
    }
    memcpy(b->data + b->end, p, n);
    b->end += (uint32_t)n;
    return true;
}

void wbuf_put(struct wbuf *w, const void *s, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

void wbuf_puts(struct wbuf *w, const char *s)
{
    wbuf_put(w, s, strlen(s));
}

void wbuf_u64(struct wbuf *w, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    wbuf_put(w, digits + sizeof(digits) - n, n);
}

struct wbuf buf_writer(struct buf *b)
{
    if (buf_room(b) < BUF_SIZE / 2)
        buf_compact(b);
    return wbuf_make(buf_tail(b), buf_room(b));
}

bool buf_commit(struct buf *b, const struct wbuf *w)
{
    if (w->overflow)
        return false;
    b->end += (uint32_t)w->len;
    return true;
}

void buf_trim_free_list(void)
{
    if (freed_since_trim) {
        freed_since_trim = 0;
        malloc_trim(0);
    }
}

void buf_free_all(void)
{
    while (free_list) {
        struct free_block *fb = free_list;
        free_list = fb->next;
        free(fb);
    }
    free_count = 0;
}
