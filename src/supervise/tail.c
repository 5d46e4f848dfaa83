/* A program's last stderr lines, bounded whatever it writes. */
#include "supervise/supervise_internal.h"

#include <string.h>

void tail_clear(struct tail *t)
{
    t->next = t->count = t->len = 0;
    t->cut = false;
}

static void end_line(struct tail *t)
{
    t->lines[t->next][t->len] = '\0';
    t->next = (t->next + 1) % (SUPERVISE_TAIL_LINES + 1);
    if (t->count < SUPERVISE_TAIL_LINES)
        t->count++;
    t->len = 0;
    t->cut = false;
}

void tail_feed(struct tail *t, const char *p, size_t n)
{
    static const size_t keep = SUPERVISE_TAIL_LINE_MAX - (sizeof(TAIL_CUT_MARK) - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n') {
            end_line(t);
            continue;
        }
        if (t->cut || c == '\r')
            continue;
        if (t->len == keep) {
            memcpy(t->lines[t->next] + t->len, TAIL_CUT_MARK, sizeof(TAIL_CUT_MARK) - 1);
            t->len += sizeof(TAIL_CUT_MARK) - 1;
            t->cut = true;
            continue;
        }
        t->lines[t->next][t->len++] = c == '\t' ? ' ' : (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
}

size_t tail_text(const struct tail *t, char *out, size_t cap)
{
    const size_t slots = SUPERVISE_TAIL_LINES + 1;
    size_t lens[SUPERVISE_TAIL_LINES + 1], total = 0, first = 0, n = t->count + (t->len ? 1 : 0);
    if (cap == 0)
        return 0;
    /* line k (0: oldest) sits in slot (next - count + k) */
    for (size_t k = 0; k < n; k++) {
        size_t slot = (t->next + slots - t->count + k) % slots;
        lens[k] = slot == t->next ? t->len : strlen(t->lines[slot]);
        total += lens[k] + 1;
    }
    /* at most SUPERVISE_TAIL_LINES, the unfinished one counted */
    for (; n - first > SUPERVISE_TAIL_LINES; first++)
        total -= lens[first] + 1;
    while (first < n && total + 1 > cap)
        total -= lens[first++] + 1;
    size_t len = 0;
    for (size_t k = first; k < n; k++) {
        size_t slot = (t->next + slots - t->count + k) % slots;
        memcpy(out + len, t->lines[slot], lens[k]);
        len += lens[k];
        out[len++] = '\n';
    }
    out[len] = '\0';
    return len;
}
