/* la_syslog.c - the syslog receiver: RFC 5424 and RFC 3164 messages over UDP (one
 * per datagram) and TCP (octet counting, RFC 6587, or newline framing). Fields
 * become Promtail's __syslog_* labels, which the job's relabel_configs turn into
 * labels; the message is the line.
 */
#include "logagent_internal.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SYSLOG_MAX_MSG 65536
#define SYSLOG_MAX_CONNS 256

struct la_syslog_conn {
    struct la_svc *s;
    struct loop_io io;
    int fd;
    struct buf in;
    char peer[64];
    struct la_syslog_conn *next;
};

static const char *const severities[] = { "emergency", "alert", "critical", "error",
                                          "warning", "notice", "informational", "debug" };
static const char *const facilities[] = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
};

static void put(struct la_entry *e, const char *name, const char *v, size_t n)
{
    if (!n || (n == 1 && v[0] == '-'))
        return;
    char *t = strndup(v, n);
    if (t) {
        relabel_set_put(&e->labels, name, t);
        free(t);
    }
}

/* The next space-separated field; *p moves past it and one space. */
static bool field(const char **p, const char *end, const char **f, size_t *n)
{
    const char *s = *p;
    const char *sp = memchr(s, ' ', (size_t)(end - s));
    const char *e = sp ? sp : end;
    if (e == s)
        return false;
    *f = s;
    *n = (size_t)(e - s);
    *p = sp ? sp + 1 : end;
    return true;
}

static int64_t parse_rfc3339(const char *s, size_t n)
{
    int64_t ns;
    return cairn_parse_rfc3339(s, n, &ns) == 0 ? ns : 0;
}

int la__syslog_parse(const char *msg, size_t n, struct la_entry *e, bool structured_data, bool incoming_ts)
{
    const char *p = msg, *end = msg + n;
    while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == 0))
        end--;
    if (p >= end || *p != '<')
        return -EINVAL;
    p++;
    int pri = 0, digits = 0;
    while (p < end && isdigit((unsigned char)*p) && digits < 3) {
        pri = pri * 10 + (*p++ - '0');
        digits++;
    }
    if (!digits || p >= end || *p != '>' || pri > 191)
        return -EINVAL;
    p++;
    relabel_set_put(&e->labels, "__syslog_message_severity", severities[pri % 8]);
    relabel_set_put(&e->labels, "__syslog_message_facility", facilities[pri / 8]);
    int64_t ts = 0;
    const char *f;
    size_t fn;
    if (p + 1 < end && p[0] == '1' && p[1] == ' ') {
        /* RFC 5424: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG] */
        p += 2;
        if (!field(&p, end, &f, &fn))
            return -EINVAL;
        ts = parse_rfc3339(f, fn);
        const char *names[] = { "__syslog_message_hostname", "__syslog_message_app_name",
                                "__syslog_message_proc_id", "__syslog_message_msg_id" };
        for (int i = 0; i < 4; i++) {
            if (!field(&p, end, &f, &fn))
                return -EINVAL;
            put(e, names[i], f, fn);
        }
        /* structured data: "-" or [id k="v" ...][...] */
        if (p < end && *p == '-') {
            p++;
        } else {
            while (p < end && *p == '[') {
                const char *idstart = ++p;
                while (p < end && *p != ' ' && *p != ']')
                    p++;
                size_t idn = (size_t)(p - idstart);
                while (p < end && *p == ' ') {
                    p++;
                    const char *ks = p;
                    while (p < end && *p != '=')
                        p++;
                    size_t kn = (size_t)(p - ks);
                    if (p + 1 >= end || p[1] != '"')
                        return -EINVAL;
                    p += 2;
                    struct buf v = { 0 };
                    while (p < end && *p != '"') {
                        if (*p == '\\' && p + 1 < end)
                            p++;
                        buf_putc(&v, *p++);
                    }
                    if (p >= end) {
                        buf_free(&v);
                        return -EINVAL;
                    }
                    p++;
                    if (structured_data && idn + kn < 200) {
                        char name[256];
                        int k = snprintf(name, sizeof(name), "__syslog_message_sd_%.*s_%.*s", (int)idn, idstart,
                                         (int)kn, ks);
                        for (int x = 20; x < k; x++)
                            if (!isalnum((unsigned char)name[x]) && name[x] != '_')
                                name[x] = '_';
                        put(e, name, v.len ? buf_head(&v) : "", buf_used(&v));
                    }
                    buf_free(&v);
                }
                if (p >= end || *p != ']')
                    return -EINVAL;
                p++;
            }
        }
        if (p < end && *p == ' ')
            p++;
        /* a BOM before the message */
        if (end - p >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
            p += 3;
    } else {
        /* RFC 3164: Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG */
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        char tmp[20];
        if (end - p >= 16) {
            memcpy(tmp, p, 15);
            tmp[15] = 0;
            const char *r = strptime(tmp, "%b %e %H:%M:%S", &tm);
            if (r && !*r && p[15] == ' ') {
                time_t now = time(NULL);
                struct tm nt;
                gmtime_r(&now, &nt);
                tm.tm_year = nt.tm_year;
                ts = (int64_t)timegm(&tm) * 1000000000;
                p += 16;
                if (field(&p, end, &f, &fn))
                    put(e, "__syslog_message_hostname", f, fn);
            }
        }
        /* TAG[PID]: */
        const char *t = p;
        while (t < end && (isalnum((unsigned char)*t) || strchr("_-./", *t)))
            t++;
        if (t > p && t < end && (*t == ':' || *t == '[')) {
            put(e, "__syslog_message_app_name", p, (size_t)(t - p));
            if (*t == '[') {
                const char *ps = t + 1, *pe = memchr(ps, ']', (size_t)(end - ps));
                if (pe) {
                    put(e, "__syslog_message_proc_id", ps, (size_t)(pe - ps));
                    t = pe + 1;
                }
            }
            if (t < end && *t == ':')
                t++;
            if (t < end && *t == ' ')
                t++;
            p = t;
        }
    }
    size_t ln = (size_t)(end - p);
    if (!(e->line = malloc(ln + 1)))
        return -ENOMEM;
    memcpy(e->line, p, ln);
    e->line[ln] = 0;
    e->n = ln;
    e->ts = incoming_ts && ts ? ts : (int64_t)(cairn_wall_time() * 1e9);
    return 0;
}

static void receive(struct la_svc *s, const char *msg, size_t n, const char *peer)
{
    const struct la_job *job = s->syslog_job;
    struct la_entry e;
    memset(&e, 0, sizeof(e));
    metric_inc(s->m_syslog);
    if (la__syslog_parse(msg, n, &e, job->syslog->structured_data, job->syslog->incoming_ts)) {
        metric_inc(s->m_syslog_bad);
        free(e.line);
        relabel_set_clear(&e.labels);
        return;
    }
    relabel_set_put(&e.labels, "__syslog_connection_ip_address", peer);
    for (size_t i = 0; i < job->syslog->nlabels; i++)
        relabel_set_put(&e.labels, job->syslog->labels[i].name, job->syslog->labels[i].value);
    if (la__clients_buffered(s) >= s->conf->buffer_bytes || !la__process(s, job, &e)) {
        if (la__clients_buffered(s) >= s->conf->buffer_bytes)
            metric_inc(s->m_dropped);
        free(e.line);
        relabel_set_clear(&e.labels);
        return;
    }
    la__ship(s, &e, NULL, 0);
}

static void peer_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
    struct net_addr a;
    memset(&a, 0, sizeof(a));
    memcpy(&a.ss, ss, sizeof(*ss));
    net_addr_format(&a, out, n);
    /* the address without its port */
    char *colon = strrchr(out, ':');
    if (colon && (ss->ss_family == AF_INET || out[0] == '['))
        *colon = 0;
    if (out[0] == '[') {
        memmove(out, out + 1, strlen(out));
        char *b = strchr(out, ']');
        if (b)
            *b = 0;
    }
}

static void on_udp(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct la_svc *s = io->data;
    char *msg = malloc(SYSLOG_MAX_MSG);
    if (!msg)
        return;
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t k = recvfrom(s->udp_fd, msg, SYSLOG_MAX_MSG, MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
        if (k < 0)
            break;
        char peer[64];
        peer_text(&ss, peer, sizeof(peer));
        receive(s, msg, (size_t)k, peer);
    }
    free(msg);
}

static void conn_close(struct la_svc *s, struct la_syslog_conn *c)
{
    for (struct la_syslog_conn **pp = &s->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    loop_io_del(&c->io);
    close(c->fd);
    buf_free(&c->in);
    free(c);
}

/* Frames: "LEN MSG" (octet counting) when the frame starts with a digit, else up
 * to a newline. Returns false when the connection must close. */
static bool frames(struct la_svc *s, struct la_syslog_conn *c)
{
    while (buf_used(&c->in)) {
        const char *p = buf_head(&c->in);
        size_t n = buf_used(&c->in);
        if (isdigit((unsigned char)p[0])) {
            size_t i = 0, len = 0;
            while (i < n && isdigit((unsigned char)p[i]) && i < 7)
                len = len * 10 + (size_t)(p[i++] - '0');
            if (i == n)
                return true;    /* more to come */
            if (p[i] != ' ' || len > SYSLOG_MAX_MSG)
                return false;
            if (n - i - 1 < len)
                return true;
            receive(s, p + i + 1, len, c->peer);
            buf_consume(&c->in, i + 1 + len);
        } else {
            const char *nl = memchr(p, '\n', n);
            if (!nl) {
                if (n > SYSLOG_MAX_MSG)
                    return false;
                return true;
            }
            if (nl > p)
                receive(s, p, (size_t)(nl - p), c->peer);
            buf_consume(&c->in, (size_t)(nl - p) + 1);
        }
    }
    buf_compact(&c->in);
    return true;
}

static void on_conn(struct loop_io *io, uint32_t events)
{
    struct la_syslog_conn *c = io->data;
    struct la_svc *s = c->s;
    (void)events;
    for (;;) {
        if (buf_reserve(&c->in, 65536)) {
            conn_close(s, c);
            return;
        }
        ssize_t k = read(c->fd, buf_tail(&c->in), buf_room(&c->in));
        if (k > 0) {
            buf_commit(&c->in, (size_t)k);
            if (!frames(s, c)) {
                metric_inc(s->m_syslog_bad);
                conn_close(s, c);
                return;
            }
            continue;
        }
        if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
            /* a last message without its newline still counts */
            if (buf_used(&c->in) && !isdigit((unsigned char)buf_head(&c->in)[0]))
                receive(s, buf_head(&c->in), buf_used(&c->in), c->peer);
            conn_close(s, c);
            return;
        }
        if (errno == EAGAIN)
            return;
    }
}

static void on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct la_svc *s = io->data;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(s->tcp_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return;
        int n = 0;
        for (struct la_syslog_conn *c = s->conns; c; c = c->next)
            n++;
        struct la_syslog_conn *c = n < SYSLOG_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        c->s = s;
        c->fd = fd;
        peer_text(&ss, c->peer, sizeof(c->peer));
        loop_io_init(&c->io, fd, on_conn, c);
        if (loop_io_add(s->loop, &c->io, EPOLLIN)) {
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        s->conns = c;
    }
}

int la__syslog_start(struct la_svc *s)
{
    s->udp_fd = s->tcp_fd = -1;
    for (size_t i = 0; i < s->njobs; i++)
        if (s->jobs[i].syslog)
            s->syslog_job = &s->jobs[i];
    if (!s->syslog_job)
        return 0;
    const struct la_syslog_conf *sc = s->syslog_job->syslog;
    char a[NET_ADDRSTRLEN];
    net_addr_format(&sc->addr, a, sizeof(a));
    if (sc->udp) {
        int fd = net_bind_udp(&sc->addr, false);
        if (fd < 0) {
            log_error("log-agent: cannot listen for syslog over UDP", "addr", a, "error", cairn_strerror(fd));
            return fd;
        }
        s->udp_fd = fd;
        loop_io_init(&s->udp_io, fd, on_udp, s);
        if (loop_io_add(s->loop, &s->udp_io, EPOLLIN))
            return -EIO;
    }
    if (sc->tcp) {
        int fd = net_listen_tcp(&sc->addr, 128, false);
        if (fd < 0) {
            log_error("log-agent: cannot listen for syslog over TCP", "addr", a, "error", cairn_strerror(fd));
            return fd;
        }
        s->tcp_fd = fd;
        loop_io_init(&s->tcp_io, fd, on_accept, s);
        if (loop_io_add(s->loop, &s->tcp_io, EPOLLIN))
            return -EIO;
    }
    log_info("log-agent: receiving syslog", "addr", a, "udp", sc->udp ? "yes" : "no", "tcp", sc->tcp ? "yes" : "no");
    return 0;
}

void la__syslog_stop(struct la_svc *s)
{
    while (s->conns)
        conn_close(s, s->conns);
    if (s->udp_fd >= 0) {
        loop_io_del(&s->udp_io);
        close(s->udp_fd);
        s->udp_fd = -1;
    }
    if (s->tcp_fd >= 0) {
        loop_io_del(&s->tcp_io);
        close(s->tcp_fd);
        s->tcp_fd = -1;
    }
}
