/* edge: server selection (edge__pick) by each balance policy, health, ejection,
 * drain, tries, and panic mode when no server is healthy. */
#include "edge/edge_internal.h"
#include "test.h"

#include <stdlib.h>

struct fixture {
    struct edge e;
    struct edge_worker w;
    struct edge_gen gen;            /* the worker's generation: round robin keeps its place */
    struct edge_conf conf;
    unsigned rr[1];
    struct edge_backend b;
    struct edge_server s[4];
};

static void setup(struct fixture *f, enum edge_balance bal, size_t n)
{
    memset(f, 0, sizeof(*f));
    f->e.reg = metrics_registry_new();
    static const char *const bl[] = { "backend", NULL };
    f->e.m_backend_panic = metrics_family(f->e.reg, METRIC_GAUGE, "edge_backend_panic", "h", bl, NULL, 0);
    f->w.e = &f->e;
    f->conf.backends = &f->b;
    f->conf.nbackends = 1;
    f->gen.conf = &f->conf;
    f->w.gen = &f->gen;
    f->w.rr = f->rr;
    f->b.name = "app";
    f->b.balance = bal;
    f->b.servers = f->s;
    f->b.nservers = n;
    for (size_t i = 0; i < n; i++) {
        char a[32];
        snprintf(a, sizeof(a), "127.0.0.1:%zu", 9100 + i);
        net_addr_parse(a, &f->s[i].addr);
        snprintf(f->s[i].name, sizeof(f->s[i].name), "%s", a);
        f->s[i].weight = 1;
        f->s[i].up = 1;
        f->s[i].backend = &f->b;
    }
}

static void teardown(struct fixture *f)
{
    free(f->b.ring);
    free(f->b.ring_server);
    metrics_registry_free(&f->e.reg);
}

static size_t pick_index(struct fixture *f, const uint64_t *tried, const char *key)
{
    struct edge_server *s = edge__pick(&f->b, &f->w, tried, key ? strv_cstr(key) : STRV_NULL);
    return s ? (size_t)(s - f->s) : SIZE_MAX;
}

TEST(balance_round_robin_weights_and_health)
{
    struct fixture f;
    setup(&f, BAL_ROUND_ROBIN, 3);
    int count[3] = { 0 };
    for (int i = 0; i < 300; i++)
        count[pick_index(&f, NULL, NULL)]++;
    CHECK(count[0] == 100 && count[1] == 100 && count[2] == 100);
    /* weight 4 takes about four turns to one */
    f.s[2].weight = 4;
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 6000; i++)
        count[pick_index(&f, NULL, NULL)]++;
    CHECK(count[2] > 2 * count[0] && count[2] > 2 * count[1]);
    /* down, ejected and drained servers are left out */
    f.s[2].weight = 1;
    f.s[0].up = 0;
    f.s[1].ejected_until_ms = cairn_now_ms() + 60000;
    for (int i = 0; i < 10; i++)
        CHECK_INT(pick_index(&f, NULL, NULL), 2);
    f.s[1].ejected_until_ms = 0;
    f.s[2].admin_drain = 1;
    for (int i = 0; i < 10; i++)
        CHECK_INT(pick_index(&f, NULL, NULL), 1);
    /* a server already tried is not picked again */
    uint64_t tried[4] = { 1u << 1, 0, 0, 0 };
    CHECK_INT(pick_index(&f, tried, NULL), SIZE_MAX);
    teardown(&f);
}

TEST(balance_least_conn)
{
    struct fixture f;
    setup(&f, BAL_LEAST_CONN, 3);
    f.s[0].inflight = 5;
    f.s[1].inflight = 1;
    f.s[2].inflight = 3;
    for (int i = 0; i < 20; i++)
        CHECK_INT(pick_index(&f, NULL, NULL), 1);
    /* per weight: 3 in flight on weight 4 is less loaded than 1 on weight 1 */
    f.s[2].weight = 4;
    CHECK_INT(pick_index(&f, NULL, NULL), 2);
    /* max_conns: a full server is not available */
    f.b.max_conns = 3;
    f.s[2].weight = 1;
    f.s[1].inflight = 3;
    CHECK_INT(pick_index(&f, NULL, NULL), SIZE_MAX);
    teardown(&f);
}

TEST(balance_hash_is_consistent)
{
    struct fixture f;
    setup(&f, BAL_HASH, 4);
    CHECK_INT(edge__build_ring(&f.b), 0);
    static const char *const keys[] = { "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi" };
    size_t first[8];
    for (int k = 0; k < 8; k++) {
        first[k] = pick_index(&f, NULL, keys[k]);
        CHECK(first[k] < 4);
        CHECK_INT(pick_index(&f, NULL, keys[k]), first[k]);     /* stable */
    }
    /* one server goes down: only its keys move */
    f.s[first[0]].up = 0;
    for (int k = 0; k < 8; k++) {
        size_t now = pick_index(&f, NULL, keys[k]);
        if (first[k] == first[0])
            CHECK(now != first[0] && now < 4);
        else
            CHECK_INT(now, first[k]);
    }
    teardown(&f);
}

TEST(balance_panic_mode)
{
    struct fixture f;
    setup(&f, BAL_ROUND_ROBIN, 3);
    for (int i = 0; i < 3; i++)
        f.s[i].up = 0;
    f.s[2].admin_drain = 1;
    /* every server down: requests spread over the ones not drained */
    int count[3] = { 0 };
    for (int i = 0; i < 100; i++) {
        size_t k = pick_index(&f, NULL, NULL);
        CHECK(k < 2);
        if (k < 3)
            count[k]++;
    }
    CHECK(count[0] == 50 && count[1] == 50);
    CHECK_INT(f.b.panic, 1);
    CHECK(edge__backend_all_down(&f.b, cairn_now_ms()));
    /* one comes back: out of panic, and only it is picked */
    f.s[1].up = 1;
    for (int i = 0; i < 10; i++)
        CHECK_INT(pick_index(&f, NULL, NULL), 1);
    CHECK_INT(f.b.panic, 0);
    /* when_all_down: fail */
    f.s[1].up = 0;
    f.b.all_down_fail = true;
    CHECK_INT(pick_index(&f, NULL, NULL), SIZE_MAX);
    CHECK_INT(f.b.panic, 0);
    teardown(&f);
}
