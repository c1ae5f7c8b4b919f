#include "core/loop.h"
#include "test.h"

#include <pthread.h>
#include <unistd.h>

static int order[8], norder;

static void tcb(struct loop_timer *t)
{
    order[norder++] = (int)(intptr_t)t->data;
}

TEST(loop_timers_fire_in_order)
{
    struct loop l;
    CHECK_INT(loop_init(&l), 0);
    struct loop_timer t[4];
    norder = 0;
    for (int i = 0; i < 4; i++)
        loop_timer_init(&t[i], tcb, (void *)(intptr_t)i);
    loop_timer_start(&l, &t[0], 30);
    loop_timer_start(&l, &t[1], 10);
    loop_timer_start(&l, &t[2], 20);
    loop_timer_start(&l, &t[3], 5);
    loop_timer_stop(&t[3]);
    CHECK(!loop_timer_armed(&t[3]));
    uint64_t start = cairn_now_ms();
    while (norder < 3 && cairn_now_ms() - start < 2000)
        loop_run_once(&l, 100);
    CHECK_INT(norder, 3);
    CHECK_INT(order[0], 1);
    CHECK_INT(order[1], 2);
    CHECK_INT(order[2], 0);
    CHECK(cairn_now_ms() - start >= 29);
    loop_destroy(&l);
}

static void stop_cb(void *arg)
{
    loop_stop(arg);
}

static void *poster(void *arg)
{
    usleep(20000);
    loop_post(arg, stop_cb, arg);
    return NULL;
}

TEST(loop_post_wakes_from_other_thread)
{
    struct loop l;
    CHECK_INT(loop_init(&l), 0);
    pthread_t th;
    pthread_create(&th, NULL, poster, &l);
    uint64_t start = cairn_now_ms();
    CHECK_INT(loop_run(&l), 0);     /* returns only through the posted stop */
    CHECK(cairn_now_ms() - start < 2000);
    pthread_join(th, NULL);
    loop_destroy(&l);
}

static int got_signal;

static void sig_cb(struct loop *l, int signo, void *arg)
{
    UNUSED(arg);
    got_signal = signo;
    loop_stop(l);
}

TEST(loop_signalfd_delivers)
{
    struct loop l;
    CHECK_INT(loop_init(&l), 0);
    int sigs[] = { SIGUSR1 };
    CHECK_INT(loop_signals(&l, sigs, 1, sig_cb, NULL), 0);
    got_signal = 0;
    kill(getpid(), SIGUSR1);
    uint64_t start = cairn_now_ms();
    while (!got_signal && cairn_now_ms() - start < 2000)
        loop_run_once(&l, 100);
    CHECK_INT(got_signal, SIGUSR1);
    loop_destroy(&l);
}

static int io_hits;

static void io_cb(struct loop_io *io, uint32_t ev)
{
    char b[16];
    if (ev & EPOLLIN) {
        ssize_t n = read(io->fd, b, sizeof(b));
        io_hits += n > 0 ? (int)n : 0;
    }
}

static int deferred;

static void defer_cb(void *arg)
{
    UNUSED(arg);
    deferred++;
}

TEST(loop_io_and_defer)
{
    struct loop l;
    CHECK_INT(loop_init(&l), 0);
    int p[2];
    CHECK_INT(pipe(p), 0);
    struct loop_io io;
    loop_io_init(&io, p[0], io_cb, NULL);
    CHECK_INT(loop_io_add(&l, &io, EPOLLIN), 0);
    io_hits = 0;
    CHECK_INT(write(p[1], "abc", 3), 3);
    loop_run_once(&l, 1000);
    CHECK_INT(io_hits, 3);
    struct loop_defer d = { 0 };
    deferred = 0;
    loop_defer(&l, &d, defer_cb, NULL);
    loop_defer(&l, &d, defer_cb, NULL);   /* queued once */
    loop_run_once(&l, 0);
    CHECK_INT(deferred, 1);
    loop_io_del(&io);
    close(p[0]);
    close(p[1]);
    loop_destroy(&l);
}
