/* The supervisor's pure parts: the bounded stderr tail and the evidence
 * sentence gateway errors carry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "supervise/supervise_internal.h"

static struct tail *new_tail(void)
{
    struct tail *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    tail_clear(t);
    return t;
}

static void feed(struct tail *t, const char *s)
{
    tail_feed(t, s, strlen(s));
}

static void test_tail_keeps_lines_in_order_with_the_unfinished_one_last(void **state)
{
    (void)state;
    struct tail *t = new_tail();
    char out[SUPERVISE_TAIL_BYTES];
    assert_int_equal(tail_text(t, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    feed(t, "one\ntw");
    feed(t, "o\nthree");
    assert_int_equal(tail_text(t, out, sizeof(out)), strlen("one\ntwo\nthree\n"));
    assert_string_equal(out, "one\ntwo\nthree\n");
    free(t);
}

static void test_tail_keeps_only_the_last_lines(void **state)
{
    (void)state;
    struct tail *t = new_tail();
    char out[SUPERVISE_TAIL_BYTES], line[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(line, sizeof(line), "line %d\n", i);
        feed(t, line);
    }
    tail_text(t, out, sizeof(out));
    assert_true(strncmp(out, "line 980\n", 9) == 0);
    assert_non_null(strstr(out, "line 999\n"));
    assert_null(strstr(out, "line 979\n"));
    /* an unfinished line counts toward the 20 */
    feed(t, "partial");
    tail_text(t, out, sizeof(out));
    assert_true(strncmp(out, "line 981\n", 9) == 0);
    assert_non_null(strstr(out, "line 999\npartial\n"));
    free(t);
}

static void test_tail_cuts_a_long_line_with_a_mark(void **state)
{
    (void)state;
    struct tail *t = new_tail();
    char out[SUPERVISE_TAIL_BYTES];
    static char big[100000];
    memset(big, 'x', sizeof(big));
    /* a megabyte without a newline: one cut line, however much comes */
    for (int i = 0; i < 10; i++)
        tail_feed(t, big, sizeof(big));
    size_t len = tail_text(t, out, sizeof(out));
    assert_int_equal(len, SUPERVISE_TAIL_LINE_MAX + 1);
    assert_string_equal(out + len - 1 - strlen(TAIL_CUT_MARK), TAIL_CUT_MARK "\n");
    /* the rest of the cut line is dropped; the next line is whole */
    feed(t, "yyy\nnext\n");
    tail_text(t, out, sizeof(out));
    assert_non_null(strstr(out, TAIL_CUT_MARK "\nnext\n"));
    assert_null(strstr(out, "yyy"));
    free(t);
}

static void test_tail_makes_control_characters_printable(void **state)
{
    (void)state;
    struct tail *t = new_tail();
    char out[64];
    feed(t, "a\tb\x1b[31mc\r\n");
    tail_text(t, out, sizeof(out));
    assert_string_equal(out, "a b?[31mc\n");
    free(t);
}

static void test_tail_text_drops_the_oldest_lines_that_do_not_fit(void **state)
{
    (void)state;
    struct tail *t = new_tail();
    char out[12];
    feed(t, "first\nsecond\nthird\n");
    assert_int_equal(tail_text(t, out, sizeof(out)), 6);
    assert_string_equal(out, "third\n");
    free(t);
}

static struct program_info info(enum program_state state)
{
    struct program_info p = {.state = state, .max_restarts = 10, .restart_window_ms = 60000};
    snprintf(p.name, sizeof(p.name), "php");
    return p;
}

static void test_evidence_names_the_signal_and_the_restart(void **state)
{
    (void)state;
    struct program_info p = info(PROGRAM_BACKOFF);
    char out[256];
    p.has_exit = true;
    p.exit_code = -1;
    snprintf(p.exit_signal, sizeof(p.exit_signal), "SIGSEGV");
    p.core_dumped = true;
    p.restarts = 1;
    p.exited_wall_ms = 1000000;
    supervise_evidence_text(&p, 1003400, out, sizeof(out));
    assert_string_equal(out, "program php exited on SIGSEGV (core dumped) 3 s ago, restart 2 of 10 "
                             "(now BACKOFF)");
    p.state = PROGRAM_RUNNING;
    p.restarts = 2;
    p.core_dumped = false;
    supervise_evidence_text(&p, 1003400, out, sizeof(out));
    assert_string_equal(out, "program php exited on SIGSEGV 3 s ago, restart 2 of 10");
}

static void test_evidence_is_silent_for_a_program_serving_long_since(void **state)
{
    (void)state;
    struct program_info p = info(PROGRAM_RUNNING);
    char out[256] = "x";
    assert_int_equal(supervise_evidence_text(&p, 5000000, out, sizeof(out)), 0);
    p.has_exit = true;
    p.exit_code = 1;
    p.exited_wall_ms = 5000000 - SUPERVISE_EVIDENCE_MS;
    assert_int_equal(supervise_evidence_text(&p, 5000000, out, sizeof(out)), 0);
    p.exited_wall_ms += 1;
    assert_true(supervise_evidence_text(&p, 5000000, out, sizeof(out)) > 0);
    assert_string_equal(out, "program php exited with code 1 59 s ago, restart 0 of 10");
}

static void test_evidence_of_fatal_hang_and_exited(void **state)
{
    (void)state;
    struct program_info p = info(PROGRAM_FATAL);
    char out[256];
    p.has_exit = true;
    p.exit_code = 3;
    p.restarts = 10;
    p.exited_wall_ms = 1000;
    supervise_evidence_text(&p, 3000, out, sizeof(out));
    assert_string_equal(out, "program php is FATAL after 10 restarts in 60 s (it last exited with "
                             "code 3 2 s ago)");
    p = info(PROGRAM_STARTING);
    p.has_exit = true;
    p.hung = true;
    p.exit_code = -1;
    snprintf(p.exit_signal, sizeof(p.exit_signal), "SIGTERM");
    p.restarts = 1;
    p.exited_wall_ms = 1000;
    supervise_evidence_text(&p, 1500, out, sizeof(out));
    assert_string_equal(
        out, "program php restarted after hanging 0 s ago, restart 1 of 10 (now STARTING)");
    p = info(PROGRAM_EXITED);
    p.has_exit = true;
    p.exit_code = 0;
    p.max_restarts = 0;
    p.exited_wall_ms = 1000;
    supervise_evidence_text(&p, 1000, out, sizeof(out));
    assert_string_equal(out, "program php exited with code 0 0 s ago, not restarted (now EXITED)");
    /* a small buffer: cut, NUL terminated, the length what was written */
    char small[12];
    assert_int_equal(supervise_evidence_text(&p, 1000, small, sizeof(small)), 11);
    assert_string_equal(small, "program php");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tail_keeps_lines_in_order_with_the_unfinished_one_last),
        cmocka_unit_test(test_tail_keeps_only_the_last_lines),
        cmocka_unit_test(test_tail_cuts_a_long_line_with_a_mark),
        cmocka_unit_test(test_tail_makes_control_characters_printable),
        cmocka_unit_test(test_tail_text_drops_the_oldest_lines_that_do_not_fit),
        cmocka_unit_test(test_evidence_names_the_signal_and_the_restart),
        cmocka_unit_test(test_evidence_is_silent_for_a_program_serving_long_since),
        cmocka_unit_test(test_evidence_of_fatal_hang_and_exited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
