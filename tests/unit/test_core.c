/* Unit tests for src/core: timer heap order and cancellation, buffers,
 * signals and child processes as loop events, loop_del within a batch, log
 * reopening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
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
    assert_int_equal(buf_acquire(&a), 0);
    char *first = a.data;
    buf_release(&a);
    assert_int_equal(buf_acquire(&b), 0);
    assert_ptr_equal(b.data, first);
    buf_release(&b);
}

/* Every loop_run() below is bounded by this timer. */
#define TEST_DEADLINE_MS 5000
static struct timer deadline;
static bool deadline_hit;

static void deadline_fired(struct timer *t)
{
    deadline_hit = true;
    loop_stop(test_loop);
}

static void run_bounded(void)
{
    deadline_hit = false;
    timer_init(&deadline, deadline_fired);
    loop_timer_set(test_loop, &deadline, TEST_DEADLINE_MS);
    loop_run(test_loop);
    loop_timer_cancel(test_loop, &deadline);
}

static int signal_runs[4];

static void count_usr1(struct signal_watch *sw)
{
    signal_runs[0]++;
    loop_stop(test_loop);
}

static void count_usr1_too(struct signal_watch *sw)
{
    signal_runs[1]++;
}

static void count_usr2(struct signal_watch *sw)
{
    signal_runs[2]++;
}

static void test_watched_signal_runs_its_callbacks_on_the_loop(void **state)
{
    (void)state;
    test_loop = loop_new();
    memset(signal_runs, 0, sizeof(signal_runs));
    struct signal_watch a, b, c;
    assert_int_equal(loop_watch_signal(test_loop, &a, SIGUSR1, count_usr1), 0);
    assert_int_equal(loop_watch_signal(test_loop, &b, SIGUSR1, count_usr1_too), 0);
    assert_int_equal(loop_watch_signal(test_loop, &c, SIGUSR2, count_usr2), 0);
    /* Blocked now: without the signalfd, SIGUSR1's default action would
     * kill the test. */
    kill(getpid(), SIGUSR1);
    assert_int_equal(signal_runs[0], 0); /* not from a handler: on the loop */
    run_bounded();
    assert_false(deadline_hit);
    assert_int_equal(signal_runs[0], 1);
    assert_int_equal(signal_runs[1], 1);
    assert_int_equal(signal_runs[2], 0);

    loop_unwatch_signal(test_loop, &b);
    kill(getpid(), SIGUSR1);
    run_bounded();
    assert_int_equal(signal_runs[0], 2);
    assert_int_equal(signal_runs[1], 1);
    loop_free(test_loop);
}

static int child_reports;
static int child_status[4];
static pid_t child_pid[4];
static struct child_watch child_watches[4];

static void child_exited(struct child_watch *cw, int wstatus)
{
    int i = (int)(cw - child_watches);
    assert_int_equal(cw->pid, child_pid[i]);
    child_status[i] = wstatus;
    if (++child_reports == 2)
        loop_stop(test_loop);
}

static pid_t spawn_exiting_with(int code)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(code);
    return pid;
}

static void test_child_exits_are_reported_with_their_status(void **state)
{
    (void)state;
    test_loop = loop_new();
    child_reports = 0;
    /* One child exits before it is watched (its zombie waits, reported from
     * the loop after the watch), one while the loop runs. */
    child_pid[0] = spawn_exiting_with(7);
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)child_pid[0], &si, WEXITED | WNOWAIT), 0);
    assert_int_equal(loop_watch_child(test_loop, &child_watches[0], child_pid[0], child_exited), 0);
    assert_int_equal(child_reports, 0); /* never from inside the call */
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    child_pid[1] = fork();
    assert_true(child_pid[1] >= 0);
    if (child_pid[1] == 0) {
        char c;
        close(pipefd[1]);
        _exit(read(pipefd[0], &c, 1) == 1 ? 9 : 1);
    }
    close(pipefd[0]);
    assert_int_equal(loop_watch_child(test_loop, &child_watches[1], child_pid[1], child_exited), 0);
    assert_int_equal(write(pipefd[1], "x", 1), 1); /* now it may exit */
    close(pipefd[1]);
    run_bounded();
    assert_false(deadline_hit);
    assert_int_equal(child_reports, 2);
    assert_true(WIFEXITED(child_status[0]) && WEXITSTATUS(child_status[0]) == 7);
    assert_true(WIFEXITED(child_status[1]) && WEXITSTATUS(child_status[1]) == 9);
    /* Reaped: no zombie left. */
    assert_int_equal(waitpid(child_pid[0], NULL, WNOHANG), -1);
    assert_int_equal(waitpid(child_pid[1], NULL, WNOHANG), -1);
    loop_free(test_loop);
}

static void test_only_children_can_be_watched(void **state)
{
    (void)state;
    test_loop = loop_new();
    struct child_watch cw;
    assert_int_equal(loop_watch_child(test_loop, &cw, getppid(), child_exited), -ECHILD);
    loop_free(test_loop);
}

static void test_unwatched_child_is_not_reported_nor_reaped(void **state)
{
    (void)state;
    test_loop = loop_new();
    child_reports = 0;
    child_pid[2] = spawn_exiting_with(3);
    assert_int_equal(loop_watch_child(test_loop, &child_watches[2], child_pid[2], child_exited), 0);
    loop_unwatch_child(test_loop, &child_watches[2]);
    int st;
    assert_int_equal(waitpid(child_pid[2], &st, 0), child_pid[2]); /* still ours to reap */
    assert_int_equal(WEXITSTATUS(st), 3);
    struct timer stop;
    timer_init(&stop, stop_loop_cb);
    loop_timer_set(test_loop, &stop, 20);
    loop_run(test_loop);
    assert_int_equal(child_reports, 0);
    loop_free(test_loop);
}

/* Two ready eventfds in one batch; whichever runs first deletes and
 * closes the other: the other's already fetched event must not run. */
struct closer {
    struct io io;
    struct closer *other;
    int runs;
};

static void close_the_other(struct io *io, uint32_t events)
{
    struct closer *c = container_of(io, struct closer, io);
    c->runs++;
    if (c->other->io.fd >= 0) {
        loop_del(test_loop, &c->other->io);
        close(c->other->io.fd);
        c->other->io.fd = -1;
    }
}

static void test_deleted_io_gets_no_event_later_in_the_batch(void **state)
{
    (void)state;
    test_loop = loop_new();
    struct closer a = {{eventfd(1, EFD_NONBLOCK), close_the_other}, NULL, 0};
    struct closer b = {{eventfd(1, EFD_NONBLOCK), close_the_other}, NULL, 0};
    a.other = &b;
    b.other = &a;
    assert_int_equal(loop_add_listener(test_loop, &a.io), 0);
    assert_int_equal(loop_add_listener(test_loop, &b.io), 0);
    struct timer stop;
    timer_init(&stop, stop_loop_cb);
    loop_timer_set(test_loop, &stop, 0); /* one iteration: one batch with both */
    loop_run(test_loop);
    assert_int_equal(a.runs + b.runs, 1);
    if (a.io.fd >= 0)
        close(a.io.fd);
    if (b.io.fd >= 0)
        close(b.io.fd);
    loop_free(test_loop);
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
        cmocka_unit_test(test_buffer_append_is_all_or_nothing),
        cmocka_unit_test(test_wbuf_overflow_is_sticky_and_exact),
        cmocka_unit_test(test_buf_writer_commits_only_whole_writes),
        cmocka_unit_test(test_released_buffers_are_reused),
        cmocka_unit_test(test_watched_signal_runs_its_callbacks_on_the_loop),
        cmocka_unit_test(test_child_exits_are_reported_with_their_status),
        cmocka_unit_test(test_only_children_can_be_watched),
        cmocka_unit_test(test_unwatched_child_is_not_reported_nor_reaped),
        cmocka_unit_test(test_deleted_io_gets_no_event_later_in_the_batch),
        cmocka_unit_test(test_log_reopen_keeps_the_descriptor_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
