/* loop.h - one epoll event loop per thread.
 *
 * A loop owns file-descriptor watchers (struct loop_io), timers kept in a binary
 * min-heap (struct loop_timer), signal delivery through signalfd, and a
 * thread-safe post queue woken through an eventfd: the only way another thread
 * hands work to a loop. Nothing here locks on the per-event path; the post queue
 * takes a mutex once per posted item.
 *
 * Watchers and timers are embedded in the caller's structures; the loop never
 * allocates or frees them. A callback may free its own watcher after
 * loop_io_del(), and may stop or start any timer.
 */
#ifndef CAIRN_LOOP_H
#define CAIRN_LOOP_H

#include "core/common.h"
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>

struct loop;
struct loop_io;
struct loop_timer;

typedef void (*loop_io_cb)(struct loop_io *io, uint32_t events);
typedef void (*loop_timer_cb)(struct loop_timer *t);
typedef void (*loop_post_cb)(void *arg);
typedef void (*loop_signal_cb)(struct loop *loop, int signo, void *arg);

struct loop_io {
    int fd;
    uint32_t events;        /* EPOLLIN | EPOLLOUT | EPOLLET ... as registered */
    loop_io_cb cb;
    void *data;
    struct loop *loop;
};

struct loop_timer {
    uint64_t when_ms;       /* absolute monotonic deadline */
    size_t heap_idx;        /* position in the heap; SIZE_MAX when not armed */
    loop_timer_cb cb;
    void *data;
    struct loop *loop;
};

struct loop_post_item {
    loop_post_cb cb;
    void *arg;
    struct loop_post_item *next;
};

/* Work run after the current batch of events (e.g. freeing a connection that a
 * later event of the same batch may still name). Embedded in the caller's data. */
struct loop_defer {
    loop_post_cb cb;
    void *arg;
    struct loop_defer *next;
    bool queued;
};

struct loop {
    int epfd;
    struct loop_defer *defer_head;
    bool running;
    uint64_t now_ms;        /* cached at each iteration */
    struct loop_timer **heap;
    size_t nheap, capheap;
    /* cross-thread posts */
    struct loop_io wake_io;
    pthread_mutex_t post_lock;
    struct loop_post_item *post_head, *post_tail;
    /* signals */
    struct loop_io sig_io;
    loop_signal_cb sig_cb;
    void *sig_arg;
    void *data;             /* owner's pointer */
};

int loop_init(struct loop *l);
void loop_destroy(struct loop *l);
/* Runs until loop_stop(); returns 0, or a negated errno if epoll fails. */
int loop_run(struct loop *l);
/* Runs one iteration waiting at most timeout_ms (-1 = until an event). */
int loop_run_once(struct loop *l, int timeout_ms);
void loop_stop(struct loop *l);
static inline uint64_t loop_now(const struct loop *l) { return l->now_ms; }
void loop_update_time(struct loop *l);

void loop_io_init(struct loop_io *io, int fd, loop_io_cb cb, void *data);
int loop_io_add(struct loop *l, struct loop_io *io, uint32_t events);
int loop_io_mod(struct loop_io *io, uint32_t events);
int loop_io_del(struct loop_io *io);

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *data);
/* (Re)arms the timer to fire after ms milliseconds. */
int loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t ms);
void loop_timer_stop(struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t)
{
    return t->heap_idx != SIZE_MAX;
}

/* Same thread only: runs d->cb(d->arg) once the current event batch is done. */
void loop_defer(struct loop *l, struct loop_defer *d, loop_post_cb cb, void *arg);

/* Thread-safe: queues cb(arg) to run on the loop's thread and wakes it. */
int loop_post(struct loop *l, loop_post_cb cb, void *arg);

/* Blocks the given signals in the calling thread and delivers them to cb through
 * a signalfd on this loop. One signal set per loop. */
int loop_signals(struct loop *l, const int *signals, size_t n, loop_signal_cb cb, void *arg);

#endif
