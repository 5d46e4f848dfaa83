/* Unit tests for src/core: timer heap order and cancellation, buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/core.h"

static int fired[16];
static int fired_count;
static struct timer timers[16];

static void record(struct timer *t)
{
    fired[fired_count++] = (int)(t - timers);
}

static void stop_loop_cb(struct timer *t);
static struct loop *test_loop;
static void stop_loop_cb(struct timer *t)
{
    (void)t;
    loop_stop(test_loop);
}

static void test_timers_fire_in_deadline_order(void **state)
{
    (void)state;
    test_loop = loop_new();
    fired_count = 0;
    int delays[] = {30, 10, 20, 0, 25};
    for (int i = 0; i < 5; i++) {
        timer_init(&timers[i], record);
        loop_timer_set(test_loop, &timers[i], (uint64_t)delays[i]);
    }
    struct timer stop;
    timer_init(&stop, stop_loop_cb);
    loop_timer_set(test_loop, &stop, 40);
    loop_run(test_loop);
    assert_int_equal(fired_count, 5);
    int expected[] = {3, 1, 2, 4, 0};
    for (int i = 0; i < 5; i++)
        assert_int_equal(fired[i], expected[i]);
    loop_free(test_loop);
}

static void test_cancelled_timer_does_not_fire(void **state)
{
    (void)state;
    test_loop = loop_new();
    fired_count = 0;
    for (int i = 0; i < 8; i++) {
        timer_init(&timers[i], record);
        loop_timer_set(test_loop, &timers[i], (uint64_t)(i * 3));
    }
    loop_timer_cancel(test_loop, &timers[2]);
    loop_timer_cancel(test_loop, &timers[5]);
    loop_timer_cancel(test_loop, &timers[5]); /* twice is harmless */
    assert_false(timer_armed(&timers[2]));
    struct timer stop;
    timer_init(&stop, stop_loop_cb);
    loop_timer_set(test_loop, &stop, 30);
    loop_run(test_loop);
    assert_int_equal(fired_count, 6);
    for (int i = 0; i < fired_count; i++)
        assert_true(fired[i] != 2 && fired[i] != 5);
    loop_free(test_loop);
}

static void test_rearming_moves_a_timer(void **state)
{
    (void)state;
    test_loop = loop_new();
    fired_count = 0;
    timer_init(&timers[0], record);
    timer_init(&timers[1], record);
    loop_timer_set(test_loop, &timers[0], 5);
    loop_timer_set(test_loop, &timers[1], 10);
    loop_timer_set(test_loop, &timers[0], 20); /* now later than timers[1] */
    struct timer stop;
    timer_init(&stop, stop_loop_cb);
    loop_timer_set(test_loop, &stop, 30);
    loop_run(test_loop);
    assert_int_equal(fired_count, 2);
    assert_int_equal(fired[0], 1);
    assert_int_equal(fired[1], 0);
    loop_free(test_loop);
}

static void test_buffer_append_consume_compact(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_acquire(&b), 0);
    assert_non_null(b.data);
    assert_true(buf_append(&b, "hello world", 11));
    buf_consume(&b, 6);
    assert_int_equal(buf_len(&b), 5);
    assert_memory_equal(buf_head(&b), "world", 5);
    buf_compact(&b);
    assert_int_equal(b.start, 0);
    assert_memory_equal(buf_head(&b), "world", 5);
    buf_consume(&b, 5);
    assert_int_equal(b.start, 0); /* empty buffers rewind */
    assert_int_equal(b.end, 0);
    buf_release(&b);
    assert_null(b.data);
}

static void test_buffer_append_is_all_or_nothing(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_acquire(&b), 0);
    static char big[BUF_SIZE + 100];
    memset(big, 'x', sizeof(big));
    /* too big: nothing appended, never a silent truncation */
    assert_false(buf_append(&b, big, sizeof(big)));
    assert_int_equal(buf_len(&b), 0);
    /* exact fit */
    assert_true(buf_append(&b, big, BUF_SIZE - 1));
    assert_true(buf_append(&b, "y", 1));
    assert_int_equal(buf_room(&b), 0);
    assert_false(buf_append(&b, "z", 1));
    assert_int_equal(buf_len(&b), BUF_SIZE);
    /* consumed bytes make room again (compaction) */
    buf_consume(&b, 10);
    assert_true(buf_append(&b, big, 10));
    assert_false(buf_append(&b, "z", 1));
    buf_release(&b);
    buf_trim_free_list();
}

static void test_wbuf_overflow_is_sticky_and_exact(void **state)
{
    (void)state;
    char out[8];
    struct wbuf w = wbuf_make(out, sizeof(out));
    wbuf_puts(&w, "1234");
    wbuf_u64(&w, 5678);
    assert_true(wbuf_ok(&w)); /* exactly full */
    assert_int_equal(w.len, 8);
    assert_memory_equal(out, "12345678", 8);
    wbuf_put(&w, "", 0);
    assert_true(wbuf_ok(&w));
    wbuf_put(&w, "9", 1);
    assert_false(wbuf_ok(&w));
    assert_int_equal(w.len, 8);
    /* a later put that would fit does not clear it */
    struct wbuf w2 = wbuf_make(out, sizeof(out));
    wbuf_puts(&w2, "123456789");
    wbuf_puts(&w2, "1");
    assert_false(wbuf_ok(&w2));
    assert_int_equal(w2.len, 0);
}

static void test_buf_writer_commits_only_whole_writes(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_acquire(&b), 0);
    assert_true(buf_append(&b, "head", 4));
    struct wbuf w = buf_writer(&b);
    wbuf_puts(&w, "-tail");
    assert_true(buf_commit(&b, &w));
    assert_int_equal(buf_len(&b), 9);
    assert_memory_equal(buf_head(&b), "head-tail", 9);
    static char big[BUF_SIZE];
    w = buf_writer(&b);
    wbuf_put(&w, big, sizeof(big));
    assert_false(buf_commit(&b, &w));
    assert_int_equal(buf_len(&b), 9);
    buf_release(&b);
}

static void test_released_buffers_are_reused(void **state)
{
    (void)state;
    struct buf a = {0}, b = {0};
    buf_acquire(&a);
    char *first = a.data;
    buf_release(&a);
    buf_acquire(&b);
    assert_ptr_equal(b.data, first);
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_cancelled_timer_does_not_fire),
        cmocka_unit_test(test_rearming_moves_a_timer),
        cmocka_unit_test(test_buffer_append_consume_compact),
        cmocka_unit_test(test_buffer_append_is_all_or_nothing),
        cmocka_unit_test(test_wbuf_overflow_is_sticky_and_exact),
        cmocka_unit_test(test_buf_writer_commits_only_whole_writes),
        cmocka_unit_test(test_released_buffers_are_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
