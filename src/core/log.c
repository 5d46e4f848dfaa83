/* Error log and buffered access log. Each line is written with one write()
 * on an O_APPEND descriptor, so lines from different threads never mix. */
#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int error_fd = 2;
static _Atomic int access_fd = 2;
static _Atomic bool access_enabled = true;
static enum log_level min_level = LOG_INFO;

/* Access lines are batched per thread: one write() per 32 KiB or per flush
 * (each loop iteration's end, see proxy), not one per request. */
#define ACCESS_BUF_SIZE (32 * 1024)
static __thread char access_buf[ACCESS_BUF_SIZE];
static __thread size_t access_len;

/* Reopening a log (reload) never changes the descriptor number writers
 * use. Closing the old descriptor and storing a new one would race with
 * another thread that loaded the old number and has not written yet: the
 * number can be reused meanwhile by a client or upstream socket, and its log
 * line would go to that peer. So each log gets a descriptor of its own on
 * first open, and later opens dup3() the new file onto that number: a write
 * lands in the old file or the new one, never elsewhere. fd 2 itself is never
 * closed or replaced (it stays the process's stderr). */
static int open_log(const char *path, _Atomic int *slot)
{
    int fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)
                  : fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return path ? -errno : 0; /* no stderr to copy: keep writing to fd 2 */
    int cur = atomic_load(slot);
    if (cur <= 2) {
        atomic_store(slot, fd); /* first open: this number stays the log's */
        return 0;
    }
    int rc = dup3(fd, cur, O_CLOEXEC) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int log_open_error(const char *path)
{
    return open_log(path, &error_fd);
}

int log_open_access(const char *path, bool disabled)
{
    atomic_store(&access_enabled, !disabled);
    if (disabled)
        return 0;
    return open_log(path, &access_fd);
}

bool log_access_enabled(void)
{
    return atomic_load_explicit(&access_enabled, memory_order_relaxed);
}

void log_set_level(enum log_level level)
{
    min_level = level;
}

static __thread time_t cached_sec;
static __thread char cached_clf[40];
static __thread char cached_iso[40];

static void refresh_time(void)
{
    time_t now = time(NULL);
    if (now == cached_sec)
        return;
    cached_sec = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(cached_clf, sizeof(cached_clf), "[%d/%b/%Y:%H:%M:%S +0000]", &tm);
    strftime(cached_iso, sizeof(cached_iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

const char *log_time_clf(void)
{
    refresh_time();
    return cached_clf;
}

static const char *level_name[] = {"debug", "info", "warn", "error"};

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char line[2048];
    refresh_time();
    int n = snprintf(line, sizeof(line), "%s [%s] ", cached_iso, level_name[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(atomic_load(&error_fd), line, len);
    (void)w; /* nowhere to report a failing error log */
}

void log_access_flush(void)
{
    if (!access_len)
        return;
    ssize_t w = write(atomic_load(&access_fd), access_buf, access_len);
    (void)w;
    access_len = 0;
}

void log_access_write(const char *line, size_t len)
{
    if (access_len + len > ACCESS_BUF_SIZE)
        log_access_flush();
    if (len > ACCESS_BUF_SIZE) {
        ssize_t w = write(atomic_load(&access_fd), line, len);
        (void)w;
        return;
    }
    memcpy(access_buf + access_len, line, len);
    access_len += len;
}
