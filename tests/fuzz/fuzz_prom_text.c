/* libFuzzer harness: the Prometheus text and OpenMetrics exposition parser (with
 * exemplars), and the float syntax it accepts. */
#include "metrics/prom_text.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_sample(void *arg, const struct prom_sample *s)
{
    size_t *n = arg;
    /* everything handed out is NUL-terminated and inside the label limit */
    if (strlen(s->name) == 0 || s->nlabels > 16 || s->series_len == 0)
        abort();
    for (size_t i = 0; i < s->nlabels; i++)
        (void)strlen(s->labels[i].value);
    if (s->ex.has && (s->ex.nlabels > PROM_EXEMPLAR_LABELS))
        abort();
    for (size_t i = 0; s->ex.has && i < s->ex.nlabels; i++)
        if (strlen(s->ex.labels[i].name) + strlen(s->ex.labels[i].value) > 512)
            abort();
    (*n)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    char err[256];
    for (int om = 0; om < 2; om++)
        prom_text_parse((const char *)data, size, om, 16, on_sample, NULL, &n, err, sizeof(err));
    double v;
    prom_parse_float((const char *)data, size < 64 ? size : 63, &v);
    return 0;
}
