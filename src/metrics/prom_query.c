/* prom_query.c - Prometheus's query API over the PromQL engine: /api/v1/query,
 * /api/v1/query_range, /api/v1/format_query, /api/v1/query_exemplars, and the
 * /graph page.
 *
 * Shapes and status codes are Prometheus 2.42's: results under
 * {"status":"success","data":{"resultType":...,"result":...}}, times as seconds
 * with millisecond fractions, values as strings; a bad parameter or query is
 * 400 "bad_data", a failing evaluation 422 "execution", a timeout 503
 * "timeout". Queries run on the service's thread, one at a time, bounded by
 * query_timeout and query_max_samples.
 */
#include "prom_internal.h"
#include "prom_text.h"
#include "promql.h"
#include "core/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Prometheus's MarshalTimestamp at p (room for 24 bytes): seconds, then the
 * milliseconds if any; returns the end. */
static char *write_time(char *p, int64_t t)
{
    if (t < 0) {
        *p++ = '-';
        t = -t;
    }
    unsigned ms = (unsigned)(t % 1000);
    p += cairn_u64_digits((uint64_t)(t / 1000), p);
    if (ms) {
        p[0] = '.';
        p[1] = (char)('0' + ms / 100);
        p[2] = (char)('0' + ms / 10 % 10);
        p[3] = (char)('0' + ms % 10);
        p += 4;
    }
    return p;
}

static void put_time(struct buf *b, int64_t t)
{
    if (buf_reserve(b, 24))
        return;
    buf_commit(b, (size_t)(write_time(buf_tail(b), t) - buf_tail(b)));
}

/* [t, "v"] (after sep, when not 0); a scalar result's value is written as
 * Prometheus writes a Scalar (never in exponent form: 'f'), a series point's as
 * jsoniter writes it ('j'). A matrix is thousands of these: written in place, one
 * reserve each. */
static void put_point_as(struct buf *b, char sep, int64_t t, double v, char mode)
{
    if (buf_reserve(b, BUF_FLOAT_MAX + 32))
        return;
    char *p = buf_tail(b);
    if (sep)
        *p++ = sep;
    *p++ = '[';
    p = write_time(p, t);
    p[0] = ',';
    p[1] = '"';
    p += 2;
    p += buf_float(p, v, mode);
    p[0] = '"';
    p[1] = ']';
    buf_commit(b, (size_t)(p + 2 - buf_tail(b)));
}

static void put_point(struct buf *b, char sep, int64_t t, double v)
{
    put_point_as(b, sep, t, v, 'j');
}

static void put_metric(struct buf *b, const struct tsdb_labels *l)
{
    buf_puts(b, "{\"metric\":");
    prom__labels_json(b, l->l, l->n);
    buf_putc(b, ',');
}

static void result_json(struct buf *b, const struct promql_result *res)
{
    static const char *const names[] = { "", "scalar", "vector", "matrix", "string" };
    if (res->type == PROMQL_MATRIX || res->type == PROMQL_VECTOR) {
        /* room for the whole answer at once: about 28 bytes a point, 160 a series */
        size_t points = 0;
        for (size_t i = 0; i < res->ns; i++)
            points += res->s[i].n;
        buf_reserve(b, 64 + res->ns * 160 + points * 28);
    }
    buf_puts(b, "{\"status\":\"success\",\"data\":{\"resultType\":\"");
    buf_puts(b, names[res->type]);
    buf_puts(b, "\",\"result\":");
    switch (res->type) {
    case PROMQL_SCALAR:
        put_point_as(b, 0, res->t, res->scalar, 'f');
        break;
    case PROMQL_STRING:
        buf_putc(b, '[');
        put_time(b, res->t);
        buf_putc(b, ',');
        buf_json_str(b, res->str);
        buf_putc(b, ']');
        break;
    case PROMQL_VECTOR:
        buf_putc(b, '[');
        for (size_t i = 0; i < res->ns; i++) {
            if (i)
                buf_putc(b, ',');
            put_metric(b, &res->s[i].labels);
            buf_puts(b, "\"value\":");
            put_point(b, 0, res->s[i].t[0], res->s[i].v[0]);
            buf_putc(b, '}');
        }
        buf_putc(b, ']');
        break;
    case PROMQL_MATRIX:
        buf_putc(b, '[');
        for (size_t i = 0; i < res->ns; i++) {
            if (i)
                buf_putc(b, ',');
            put_metric(b, &res->s[i].labels);
            buf_puts(b, "\"values\":[");
            for (size_t k = 0; k < res->s[i].n; k++)
                put_point(b, k ? ',' : 0, res->s[i].t[k], res->s[i].v[k]);
            buf_puts(b, "]}");
        }
        buf_putc(b, ']');
        break;
    default:
        buf_puts(b, "null");
    }
    buf_puts(b, "}}");
}

/* A duration parameter: float seconds or a Prometheus duration. */
static int parse_duration_param(const char *s, int64_t *ms)
{
    double f;
    if (prom_parse_float(s, strlen(s), &f) == 0) {
        if (!isfinite(f) || fabs(f) > 9.2e15)
            return -EINVAL;
        *ms = (int64_t)llround(f * 1000);
        return 0;
    }
    uint64_t u;
    if (cfg_parse_duration(s, &u) || u > INT64_MAX)
        return -EINVAL;
    *ms = (int64_t)u;
    return 0;
}

static bool bad_param(struct httpd_req *r, const char *name, const char *value, const char *what)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "invalid parameter \"%s\": cannot parse \"%.200s\" to a valid %s", name,
             value, what);
    prom__api_error(r, 400, "bad_data", msg);
    return false;
}

static bool time_param(struct httpd_req *r, const struct http_form *f, const char *name, bool required,
                       int64_t def, int64_t *out)
{
    const char *s = http_form_get(f, name);
    if (!s || !*s) {
        if (required) {
            char msg[100];
            snprintf(msg, sizeof(msg), "invalid parameter \"%s\": cannot parse \"\" to a valid timestamp", name);
            prom__api_error(r, 400, "bad_data", msg);
            return false;
        }
        *out = def;
        return true;
    }
    if (prom__parse_time(s, out))
        return bad_param(r, name, s, "timestamp");
    return true;
}

/* The options of one query: the service's limits and the request's timeout. */
static bool query_opts(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f,
                       struct promql_opts *o)
{
    memset(o, 0, sizeof(*o));
    int64_t timeout = (int64_t)ps->conf->query_timeout_ms;
    const char *t = http_form_get(f, "timeout");
    if (t && *t) {
        int64_t ms;
        if (parse_duration_param(t, &ms) || ms <= 0)
            return bad_param(r, "timeout", t, "duration");
        if (ms < timeout)
            timeout = ms;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    o->deadline_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + timeout * 1000000;
    o->max_samples = ps->conf->query_max_samples;
    o->lookback_ms = (int64_t)ps->conf->lookback_ms;
    o->default_step_ms = ps->conf->evaluation_interval_ms ? (int64_t)ps->conf->evaluation_interval_ms : 60000;
    return true;
}

static void run(struct prom_svc *ps, struct httpd_req *r, const char *q, int64_t start, int64_t end,
                int64_t step, const struct promql_opts *o)
{
    char err[1024];
    struct promql_node *n = promql_parse(q ? q : "", err, sizeof(err));
    if (!n) {
        char msg[1100];
        snprintf(msg, sizeof(msg), "invalid parameter \"query\": %s", err);
        prom__api_error(r, 400, "bad_data", msg);
        return;
    }
    struct promql_result res;
    int rc = promql_eval(&ps->db, n, start, end, step, o, &res, err, sizeof(err));
    promql_free(n);
    if (rc) {
        if (rc == PROMQL_EBAD)
            prom__api_error(r, 400, "bad_data", err);
        else if (rc == PROMQL_ETIMEOUT)
            prom__api_error(r, 503, "timeout", err);
        else
            prom__api_error(r, 422, "execution", err);
        return;
    }
    struct buf b = BUF_INIT;
    result_json(&b, &res);
    promql_result_free(&res);
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

static void h_query(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    int64_t t;
    struct promql_opts o;
    if (!time_param(r, f, "time", false, prom__now_ms(), &t) || !query_opts(ps, r, f, &o))
        return;
    run(ps, r, http_form_get(f, "query"), t, t, 0, &o);
}

static void h_query_range(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    int64_t start, end, step;
    struct promql_opts o;
    if (!time_param(r, f, "start", true, 0, &start) || !time_param(r, f, "end", true, 0, &end))
        return;
    if (end < start) {
        prom__api_error(r, 400, "bad_data", "end timestamp must not be before start time");
        return;
    }
    const char *s = http_form_get(f, "step");
    if (!s || !*s || parse_duration_param(s, &step)) {
        bad_param(r, "step", s ? s : "", "duration");
        return;
    }
    if (step <= 0) {
        prom__api_error(r, 400, "bad_data",
                        "zero or negative query resolution step widths are not accepted. Try a positive integer");
        return;
    }
    if ((end - start) / step > PROMQL_MAX_STEPS) {
        prom__api_error(r, 400, "bad_data",
                        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
        return;
    }
    if (!query_opts(ps, r, f, &o))
        return;
    run(ps, r, http_form_get(f, "query"), start, end, step, &o);
}

static void h_format_query(struct httpd_req *r, const struct http_form *f)
{
    char err[1024];
    const char *q = http_form_get(f, "query");
    struct promql_node *n = promql_parse(q ? q : "", err, sizeof(err));
    if (!n) {
        prom__api_error(r, 400, "bad_data", err);
        return;
    }
    struct buf t = BUF_INIT, b = BUF_INIT;
    promql_pretty(n, 0, &t);
    buf_putc(&t, 0);
    promql_free(n);
    buf_puts(&b, "{\"status\":\"success\",\"data\":");
    buf_json_str(&b, buf_head(&t));
    buf_putc(&b, '}');
    prom__reply_json(r, 200, &b);
    buf_free(&b);
    buf_free(&t);
}

static void h_exemplars(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    char err[1024];
    int64_t s, e;
    if (!time_param(r, f, "start", false, 0, &s) || !time_param(r, f, "end", false, 0, &e))
        return;
    const char *q = http_form_get(f, "query");
    struct promql_node *n = promql_parse(q ? q : "", err, sizeof(err));
    if (!n) {
        prom__api_error(r, 400, "bad_data", err);
        return;
    }
    struct buf b = BUF_INIT;
    int rc = prom_exemplars_query(&ps->exemplars, &ps->db, n, s, e, &b);
    promql_free(n);
    if (rc)
        prom__api_error(r, 500, "internal", "out of memory");
    else
        prom__reply_json(r, 200, &b);
    buf_free(&b);
}

static const char graph_page[] =
"<!doctype html><html><head><meta charset=utf-8><title>cairn metrics</title>\n"
"<style>body{font:14px sans-serif;margin:1em}textarea{width:100%;font:13px monospace}"
"table{border-collapse:collapse;margin-top:1em}td,th{border:1px solid #ccc;padding:2px 6px;font:12px monospace;text-align:left}"
"#err{color:#b00}svg{border:1px solid #ccc;margin-top:1em}</style></head><body>\n"
"<h3>cairn metrics: query</h3>\n"
"<form id=f><textarea id=q rows=3 placeholder=\"e.g. rate(http_requests_total[5m])\"></textarea><br>"
"range <input id=r value=1h size=5> <button>Execute</button> "
"<label><input type=radio name=m value=table checked>table</label>"
"<label><input type=radio name=m value=graph>graph</label></form>\n"
"<div id=err></div><div id=out></div>\n"
"<script>\n"
"const $=id=>document.getElementById(id);\n"
"function dur(s){const m=s.match(/^(\\d+)([smhdw])$/);if(!m)return 3600;return m[1]*{s:1,m:60,h:3600,d:86400,w:604800}[m[2]]}\n"
"function esc(s){return String(s).replace(/[&<>]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]))}\n"
"function lbl(m){const n=m.__name__||'';const k=Object.keys(m).filter(x=>x!='__name__').map(x=>x+'=\"'+m[x]+'\"');return n+'{'+k.join(', ')+'}'}\n"
"async function run(e){if(e)e.preventDefault();const q=$('q').value;if(!q)return;$('err').textContent='';$('out').innerHTML='';\n"
" const graph=document.querySelector('input[name=m]:checked').value=='graph';const now=Date.now()/1000;\n"
" const p=new URLSearchParams({query:q});let url='api/v1/query';\n"
" if(graph){const r=dur($('r').value);p.set('start',now-r);p.set('end',now);p.set('step',Math.max(1,Math.round(r/250)));url='api/v1/query_range'}\n"
" history.replaceState(null,'','?'+new URLSearchParams({q:q,m:graph?'graph':'table',r:$('r').value}));\n"
" const res=await fetch(url,{method:'POST',body:p});const j=await res.json();\n"
" if(j.status!='success'){$('err').textContent=j.errorType+': '+j.error;return}\n"
" const d=j.data;if(!graph){let h='<table><tr><th>series</th><th>value</th></tr>';\n"
"  if(d.resultType=='scalar'||d.resultType=='string')h+='<tr><td>'+d.resultType+'</td><td>'+esc(d.result[1])+'</td></tr>';\n"
"  else for(const s of d.result)h+='<tr><td>'+esc(lbl(s.metric))+'</td><td>'+esc(s.value?s.value[1]:s.values.map(v=>v[1]+' @'+v[0]).join('<br>'))+'</td></tr>';\n"
"  $('out').innerHTML=h+'</table>';return}\n"
" const W=900,H=360;let xs=[],ys=[];for(const s of d.result)for(const v of s.values){xs.push(v[0]);const y=parseFloat(v[1]);if(isFinite(y))ys.push(y)}\n"
" if(!xs.length){$('out').textContent='no data';return}\n"
" const x0=Math.min(...xs),x1=Math.max(...xs)||x0+1,y0=Math.min(...ys,0),y1=Math.max(...ys,1e-9);\n"
" const X=x=>40+(x-x0)/((x1-x0)||1)*(W-50),Y=y=>H-20-(y-y0)/((y1-y0)||1)*(H-30);\n"
" let svg='<svg width='+W+' height='+H+'><text x=2 y=12 font-size=10>'+y1.toPrecision(4)+'</text><text x=2 y='+(H-22)+' font-size=10>'+y0.toPrecision(4)+'</text>';\n"
" let i=0,leg='';for(const s of d.result){const c='hsl('+(i++*67%360)+',70%,40%)';let path='';let prev=null;\n"
"  for(const v of s.values){const y=parseFloat(v[1]);if(!isFinite(y)){prev=null;continue}path+=(prev!==null&&v[0]-prev<=p.get('step')*1.5?'L':'M')+X(v[0]).toFixed(1)+' '+Y(y).toFixed(1);prev=v[0]}\n"
"  svg+='<path fill=none stroke=\"'+c+'\" d=\"'+path+'\"/>';leg+='<div style=\"color:'+c+'\">'+esc(lbl(s.metric))+'</div>'}\n"
" $('out').innerHTML=svg+'</svg>'+leg}\n"
"$('f').onsubmit=run;const u=new URLSearchParams(location.search);if(u.get('q')){$('q').value=u.get('q');if(u.get('r'))$('r').value=u.get('r');\n"
" if(u.get('m')=='graph')document.querySelector('input[value=graph]').checked=true;run()}\n"
"</script></body></html>\n";

bool prom__query_handle(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    struct strv p = r->h.path;
    if (strv_eq_cstr(p, "/api/v1/query"))
        h_query(ps, r, f);
    else if (strv_eq_cstr(p, "/api/v1/query_range"))
        h_query_range(ps, r, f);
    else if (strv_eq_cstr(p, "/api/v1/format_query"))
        h_format_query(r, f);
    else if (strv_eq_cstr(p, "/api/v1/query_exemplars"))
        h_exemplars(ps, r, f);
    else if (strv_eq_cstr(p, "/graph"))
        httpd_respond(r, 200, "text/html; charset=utf-8", graph_page, sizeof(graph_page) - 1);
    else
        return false;
    return true;
}
