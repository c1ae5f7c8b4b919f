/* loop.c - epoll event loop with a timer heap, signalfd and eventfd posts. */
#include "core/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void wake_cb(struct loop_io *io, uint32_t events);

int loop_init(struct loop *l)
{
    memset(l, 0, sizeof(*l));
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd == -1)
        return -errno;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd == -1) {
        int e = -errno;
        close(l->epfd);
        return e;
    }
    pthread_mutex_init(&l->post_lock, NULL);
    loop_io_init(&l->wake_io, efd, wake_cb, l);
    int r = loop_io_add(l, &l->wake_io, EPOLLIN);
    if (r) {
        close(efd);
        close(l->epfd);
        pthread_mutex_destroy(&l->post_lock);
        return r;
    }
    l->sig_io.fd = -1;
    loop_update_time(l);
    return 0;
}

void loop_destroy(struct loop *l)
{
    /* Run what is still queued so posted resources are released. */
    for (;;) {
        pthread_mutex_lock(&l->post_lock);
        struct loop_post_item *it = l->post_head;
        l->post_head = l->post_tail = NULL;
        pthread_mutex_unlock(&l->post_lock);
        if (!it)
            break;
        while (it) {
            struct loop_post_item *next = it->next;
            it->cb(it->arg);
            free(it);
            it = next;
        }
    }
    if (l->wake_io.fd >= 0)
        close(l->wake_io.fd);
    if (l->sig_io.fd >= 0)
        close(l->sig_io.fd);
    close(l->epfd);
    free(l->heap);
    pthread_mutex_destroy(&l->post_lock);
    memset(l, 0, sizeof(*l));
    l->epfd = -1;
}

void loop_update_time(struct loop *l)
{
    l->now_ms = cairn_now_ms();
}

void loop_io_init(struct loop_io *io, int fd, loop_io_cb cb, void *data)
{
    io->fd = fd;
    io->events = 0;
    io->cb = cb;
    io->data = data;
    io->loop = NULL;
}

int loop_io_add(struct loop *l, struct loop_io *io, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev) == -1)
        return -errno;
    io->events = events;
    io->loop = l;
    return 0;
}

int loop_io_mod(struct loop_io *io, uint32_t events)
{
    if (io->events == events)
        return 0;
    struct epoll_event ev = { .events = events, .data.ptr = io };
    if (epoll_ctl(io->loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) == -1)
        return -errno;
    io->events = events;
    return 0;
}

int loop_io_del(struct loop_io *io)
{
    if (!io->loop)
        return 0;
    int r = 0;
    if (epoll_ctl(io->loop->epfd, EPOLL_CTL_DEL, io->fd, NULL) == -1)
        r = -errno;
    io->loop = NULL;
    return r;
}

/* ---- timers: binary min-heap on when_ms ---- */

static void heap_swap(struct loop *l, size_t a, size_t b)
{
    struct loop_timer *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_idx = a;
    l->heap[b]->heap_idx = b;
}

static void heap_up(struct loop *l, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->when_ms <= l->heap[i]->when_ms)
            break;
        heap_swap(l, i, p);
        i = p;
    }
}

static void heap_down(struct loop *l, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1, m = i;
        if (c < l->nheap && l->heap[c]->when_ms < l->heap[m]->when_ms)
            m = c;
        if (c + 1 < l->nheap && l->heap[c + 1]->when_ms < l->heap[m]->when_ms)
            m = c + 1;
        if (m == i)
            break;
        heap_swap(l, i, m);
        i = m;
    }
}

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *data)
{
    t->when_ms = 0;
    t->heap_idx = SIZE_MAX;
    t->cb = cb;
    t->data = data;
    t->loop = NULL;
}

int loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t ms)
{
    loop_timer_stop(t);
    if (l->nheap == l->capheap) {
        size_t cap = l->capheap ? l->capheap * 2 : 64;
        struct loop_timer **h = realloc(l->heap, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        l->heap = h;
        l->capheap = cap;
    }
    t->loop = l;
    t->when_ms = l->now_ms + ms;
    t->heap_idx = l->nheap;
    l->heap[l->nheap++] = t;
    heap_up(l, t->heap_idx);
    return 0;
}

void loop_timer_stop(struct loop_timer *t)
{
    if (t->heap_idx == SIZE_MAX)
        return;
    struct loop *l = t->loop;
    size_t i = t->heap_idx;
    size_t last = --l->nheap;
    if (i != last) {
        l->heap[i] = l->heap[last];
        l->heap[i]->heap_idx = i;
        heap_down(l, i);
        heap_up(l, i);
    }
    t->heap_idx = SIZE_MAX;
}

static void run_timers(struct loop *l)
{
    while (l->nheap && l->heap[0]->when_ms <= l->now_ms) {
        struct loop_timer *t = l->heap[0];
        loop_timer_stop(t);
        t->cb(t);
    }
}

/* ---- cross-thread posts ---- */

int loop_post(struct loop *l, loop_post_cb cb, void *arg)
{
    struct loop_post_item *it = malloc(sizeof(*it));
    if (!it)
        return -ENOMEM;
    it->cb = cb;
    it->arg = arg;
    it->next = NULL;
    pthread_mutex_lock(&l->post_lock);
    if (l->post_tail)
        l->post_tail->next = it;
    else
        l->post_head = it;
    l->post_tail = it;
    pthread_mutex_unlock(&l->post_lock);
    uint64_t one = 1;
    ssize_t w = write(l->wake_io.fd, &one, sizeof(one));
    (void)w; /* EAGAIN means the counter is already non-zero: the loop will wake */
    return 0;
}

static void wake_cb(struct loop_io *io, uint32_t events)
{
    struct loop *l = io->data;
    uint64_t v;
    UNUSED(events);
    while (read(io->fd, &v, sizeof(v)) > 0)
        ;
    pthread_mutex_lock(&l->post_lock);
    struct loop_post_item *it = l->post_head;
    l->post_head = l->post_tail = NULL;
    pthread_mutex_unlock(&l->post_lock);
    while (it) {
        struct loop_post_item *next = it->next;
        it->cb(it->arg);
        free(it);
        it = next;
    }
}

/* ---- signals ---- */

static void sig_cb(struct loop_io *io, uint32_t events)
{
    struct loop *l = io->data;
    struct signalfd_siginfo si;
    UNUSED(events);
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        l->sig_cb(l, (int)si.ssi_signo, l->sig_arg);
}

int loop_signals(struct loop *l, const int *signals, size_t n, loop_signal_cb cb, void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < n; i++)
        sigaddset(&set, signals[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -EINVAL;
    int fd = signalfd(l->sig_io.fd, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd == -1)
        return -errno;
    l->sig_cb = cb;
    l->sig_arg = arg;
    if (l->sig_io.fd == -1) {
        loop_io_init(&l->sig_io, fd, sig_cb, l);
        int r = loop_io_add(l, &l->sig_io, EPOLLIN);
        if (r) {
            close(fd);
            l->sig_io.fd = -1;
            return r;
        }
    }
    return 0;
}

void loop_defer(struct loop *l, struct loop_defer *d, loop_post_cb cb, void *arg)
{
    if (d->queued)
        return;
    d->cb = cb;
    d->arg = arg;
    d->queued = true;
    d->next = l->defer_head;
    l->defer_head = d;
}

static void run_deferred(struct loop *l)
{
    while (l->defer_head) {
        struct loop_defer *d = l->defer_head;
        l->defer_head = d->next;
        d->queued = false;
        d->cb(d->arg);
    }
}

/* ---- running ---- */

int loop_run_once(struct loop *l, int timeout_ms)
{
    struct epoll_event evs[128];
    loop_update_time(l);
    run_timers(l);
    run_deferred(l);
    if (l->nheap) {
        uint64_t next = l->heap[0]->when_ms;
        int until = next > l->now_ms ? (int)MIN(next - l->now_ms, (uint64_t)INT32_MAX) : 0;
        if (timeout_ms < 0 || until < timeout_ms)
            timeout_ms = until;
    }
    int n = epoll_wait(l->epfd, evs, (int)ARRAY_SIZE(evs), timeout_ms);
    if (n == -1) {
        if (errno == EINTR)
            return 0;
        return -errno;
    }
    loop_update_time(l);
    for (int i = 0; i < n; i++) {
        struct loop_io *io = evs[i].data.ptr;
        io->cb(io, evs[i].events);
    }
    run_deferred(l);
    run_timers(l);
    run_deferred(l);
    return n;
}

int loop_run(struct loop *l)
{
    l->running = true;
    while (l->running) {
        int r = loop_run_once(l, -1);
        if (r < 0)
            return r;
    }
    return 0;
}

void loop_stop(struct loop *l)
{
    l->running = false;
}
