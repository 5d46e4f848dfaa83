/* Private to src/supervise: the pure parts, unit-tested alone. */
#ifndef BULWARK_SUPERVISE_INTERNAL_H
#define BULWARK_SUPERVISE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "supervise/supervise.h"

/* The last lines a program wrote to stderr, in fixed storage: a program that
 * floods, or prints megabytes without a newline, costs the same ~4 KiB as
 * one that prints nothing. A line longer than SUPERVISE_TAIL_LINE_MAX keeps
 * its start, ends with TAIL_CUT_MARK, and the rest of it (up to its newline)
 * is dropped. Control characters become '?' and a tab a space, so a line is
 * always one printable log line. */
#define TAIL_CUT_MARK "... [line cut]"
struct tail {
    /* One slot more than the lines kept: the line being written. */
    char lines[SUPERVISE_TAIL_LINES + 1][SUPERVISE_TAIL_LINE_MAX + 1];
    size_t next;  /* the slot of the line being written */
    size_t count; /* complete lines kept, at most SUPERVISE_TAIL_LINES */
    size_t len;   /* bytes of the line being written */
    bool cut;     /* that line was cut: drop bytes up to its newline */
};

void tail_clear(struct tail *t);
/* Add n bytes of output. */
void tail_feed(struct tail *t, const char *p, size_t n);
/* The last SUPERVISE_TAIL_LINES lines, oldest first, the unfinished one (if
 * any) last, each followed by '\n', into out (NUL terminated, at most cap bytes: the oldest
 * lines are left out first when they do not all fit). Returns the length. */
size_t tail_text(const struct tail *t, char *out, size_t cap);

#endif
