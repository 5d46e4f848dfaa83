/* The sentence that names a program in a gateway error's evidence. Pure: it
 * reads a snapshot (struct program_info), so it is unit-tested alone. */
#include "supervise/supervise_internal.h"

#include <stdio.h>

/* "exited on SIGSEGV (core dumped)", "exited with code 1", or, when
 * bulwark stopped it because its server hung, "restarted after hanging". */
static const char *how_it_ended(const struct program_info *p, char *buf, size_t cap)
{
    if (p->hung)
        snprintf(buf, cap, "restarted after hanging");
    else if (p->exit_signal[0])
        snprintf(buf, cap, "exited on %s%s", p->exit_signal,
                 p->core_dumped ? " (core dumped)" : "");
    else if (p->exit_code >= 0)
        snprintf(buf, cap, "exited with code %d", p->exit_code);
    else
        snprintf(buf, cap, "exited (%s)", p->last_exit);
    return buf;
}

size_t supervise_evidence_text(const struct program_info *p, int64_t now_ms, char *out, size_t cap)
{
    char how[112];
    int n;
    bool recent = p->has_exit && now_ms - p->exited_wall_ms < SUPERVISE_EVIDENCE_MS;
    if (cap == 0 || (p->state == PROGRAM_RUNNING && !recent))
        return 0;
    int64_t ago_s =
        p->has_exit && now_ms > p->exited_wall_ms ? (now_ms - p->exited_wall_ms) / 1000 : 0;
    if (p->state == PROGRAM_FATAL) {
        char window[32];
        if (p->restart_window_ms % 1000 == 0)
            snprintf(window, sizeof(window), "%u s", p->restart_window_ms / 1000);
        else
            snprintf(window, sizeof(window), "%u ms", p->restart_window_ms);
        n = snprintf(out, cap,
                     "program %s is FATAL after %u restarts in %s (it last %s %lld s ago)", p->name,
                     p->restarts, window, how_it_ended(p, how, sizeof(how)), (long long)ago_s);
    } else if (!p->has_exit) {
        n = snprintf(out, cap, "program %s is %s", p->name, supervise_state_name(p->state));
    } else {
        char restart[48];
        /* In back-off the restart to come is the next one; once it ran,
         * restarts counts it. */
        uint32_t k = p->restarts + (p->state == PROGRAM_BACKOFF ? 1 : 0);
        if (p->state == PROGRAM_EXITED || p->state == PROGRAM_STOPPED ||
            p->state == PROGRAM_STOPPING)
            snprintf(restart, sizeof(restart), "not restarted");
        else if (p->max_restarts)
            snprintf(restart, sizeof(restart), "restart %u of %u", k, p->max_restarts);
        else
            snprintf(restart, sizeof(restart), "restart %u", k);
        n = snprintf(out, cap, "program %s %s %lld s ago, %s%s%s%s", p->name,
                     how_it_ended(p, how, sizeof(how)), (long long)ago_s, restart,
                     p->state == PROGRAM_RUNNING ? "" : " (now ",
                     p->state == PROGRAM_RUNNING ? "" : supervise_state_name(p->state),
                     p->state == PROGRAM_RUNNING ? "" : ")");
    }
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
