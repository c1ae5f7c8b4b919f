#include "core/tunnel.h"
#include "core/net.h"
#include "test.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static int closed_calls;
static void on_closed(void *arg)
{
    (void)arg;
    closed_calls++;
}

static ssize_t read_all(int fd, char *p, size_t n, struct loop *l)
{
    size_t got = 0;
    for (int spins = 0; got < n && spins < 200; spins++) {
        loop_run_once(l, 10);
        ssize_t r = read(fd, p + got, n - got);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            break;
    }
    return (ssize_t)got;
}

/* Two socket pairs joined: what one outer end writes the other reads (the bytes
 * already due first); an end's close reaches the other side as end of stream, and
 * the tunnel closes (on_close once) when both directions are done. */
TEST(tunnel_copies_both_ways_and_passes_the_end_on)
{
    struct loop l;
    CHECK_INT(loop_init(&l), 0);
    int a[2], b[2];
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    net_set_nonblock(a[1]);
    net_set_nonblock(b[1]);
    net_set_nonblock(a[0]);
    net_set_nonblock(b[0]);
    struct tunnel_set set = { .loop = &l };
    struct buf to_a = BUF_INIT, to_b = BUF_INIT;
    buf_puts(&to_a, "HTTP/1.1 101 ok\r\n\r\n");
    buf_puts(&to_b, "early");
    closed_calls = 0;
    CHECK_INT(tunnel_start(&set, a[1], NULL, &to_a, b[1], NULL, &to_b, 5000, on_closed, NULL), 0);
    CHECK_INT(set.n, 1);
    char got[64] = "";
    CHECK_INT(read_all(a[0], got, 19, &l), 19);
    CHECK(!memcmp(got, "HTTP/1.1 101 ok\r\n\r\n", 19));
    CHECK_INT(read_all(b[0], got, 5, &l), 5);
    CHECK(!memcmp(got, "early", 5));
    CHECK_INT(write(a[0], "ping", 4), 4);
    CHECK_INT(read_all(b[0], got, 4, &l), 4);
    CHECK(!memcmp(got, "ping", 4));
    CHECK_INT(write(b[0], "pong!", 5), 5);
    CHECK_INT(read_all(a[0], got, 5, &l), 5);
    CHECK(!memcmp(got, "pong!", 5));
    /* a's client ends: b's reader sees the end, b can still answer, then ends too */
    shutdown(a[0], SHUT_WR);
    CHECK_INT(read_all(b[0], got, 1, &l), 0);
    CHECK_INT(write(b[0], "bye", 3), 3);
    CHECK_INT(read_all(a[0], got, 3, &l), 3);
    shutdown(b[0], SHUT_WR);
    for (int i = 0; i < 50 && set.n; i++)
        loop_run_once(&l, 10);
    CHECK_INT(set.n, 0);
    CHECK_INT(closed_calls, 1);
    tunnel_close_all(&set);
    close(a[0]);
    close(b[0]);
    loop_destroy(&l);
}
