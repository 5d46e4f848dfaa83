/* The plain-socket transport: read(), writev(), shutdown() on a connected,
 * non-blocking socket registered edge-triggered. */
#include "core/core.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

void transport_on_event(struct transport *t, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        t->readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        t->rdhup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        t->writable = true;
}

static ssize_t plain_read(struct transport *t, void *p, size_t n)
{
    for (;;) {
        ssize_t r = read(t->fd, p, n);
        if (r > 0) {
            /* A short read drained the socket: edge-triggered epoll reports
             * the next bytes. Not so when the FIN came with the same edge:
             * only reading the 0 tells, and no new edge will come. */
            if ((size_t)r < n && !t->rdhup)
                t->readable = false;
            return r;
        }
        if (r == 0) {
            t->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            t->readable = false;
            return -EAGAIN;
        }
        return -errno;
    }
}

static ssize_t plain_writev(struct transport *t, const struct iovec *iov, int n)
{
    for (;;) {
        ssize_t w = writev(t->fd, iov, n);
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            t->writable = false;
            return -EAGAIN;
        }
        return -errno;
    }
}

static int plain_shutdown_write(struct transport *t)
{
    return shutdown(t->fd, SHUT_WR) < 0 ? -errno : 0;
}

const struct transport_ops transport_plain = {plain_read, plain_writev, plain_shutdown_write};

bool transport_quiet(struct transport *t)
{
    if (t->eof || t->rdhup)
        return false;
    if (!t->readable)
        return true; /* the last read saw EAGAIN, and no edge came since */
    /* The last read filled the buffer exactly: whether more is waiting is
     * unknown until we look. Anything there is not ours to leave behind. */
    char c;
    ssize_t r = recv(t->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        t->readable = false;
        return true;
    }
    return false;
}
