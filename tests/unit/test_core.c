/* Unit tests for src/core: timer heap order and cancellation, buffers, log
 * reopening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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
    assert_int_equal(buf_append(&b, "hello world", 11), 11);
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

static void test_buffer_append_is_bounded(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_acquire(&b), 0);
    static char big[BUF_SIZE + 100];
    memset(big, 'x', sizeof(big));
    assert_int_equal(buf_append(&b, big, sizeof(big)), BUF_SIZE);
    assert_int_equal(buf_room(&b), 0);
    assert_int_equal(buf_append(&b, "y", 1), 0);
    buf_release(&b);
    buf_trim_free_list();
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

/* The descriptor of ours open on path, or -1. */
static int fd_open_on(const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int found = -1;
    assert_non_null(d);
    while ((e = readdir(d))) {
        char link[300], target[4096];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, path) == 0 && atoi(e->d_name) != dirfd(d))
            found = atoi(e->d_name);
    }
    closedir(d);
    return found;
}

static void read_file(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f) {
        n = fread(out, 1, cap - 1, f);
        fclose(f);
    }
    out[n] = '\0';
}

/* Bug 14: a reopen (reload) must not change the descriptor number a worker
 * may have loaded: the new file takes over the old number. */
static void test_log_reopen_keeps_the_descriptor_number(void **state)
{
    (void)state;
    char dir[] = "/tmp/bulwark-log-XXXXXX", a[128], b[128], text[4096];
    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof(a), "%s/a.log", dir);
    snprintf(b, sizeof(b), "%s/b.log", dir);

    assert_int_equal(log_open_error(a), 0);
    int fd = fd_open_on(a);
    assert_true(fd > 2);
    log_error("first line");
    assert_int_equal(log_open_error(b), 0);
    assert_int_equal(fd_open_on(b), fd); /* same number, new file */
    assert_int_equal(fd_open_on(a), -1); /* the old file is closed */
    log_error("second line");
    read_file(a, text, sizeof(text));
    assert_non_null(strstr(text, "first line"));
    assert_null(strstr(text, "second line"));
    read_file(b, text, sizeof(text));
    assert_non_null(strstr(text, "second line"));

    /* back to stderr: still the same number, now a copy of fd 2 */
    assert_int_equal(log_open_error(NULL), 0);
    assert_int_equal(fd_open_on(b), -1);
    /* a path that cannot be opened keeps the current log */
    assert_true(log_open_error("/nonexistent-dir/x.log") < 0);
    unlink(a);
    unlink(b);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_cancelled_timer_does_not_fire),
        cmocka_unit_test(test_rearming_moves_a_timer),
        cmocka_unit_test(test_buffer_append_consume_compact),
        cmocka_unit_test(test_buffer_append_is_bounded),
        cmocka_unit_test(test_released_buffers_are_reused),
        cmocka_unit_test(test_log_reopen_keeps_the_descriptor_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
