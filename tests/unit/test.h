/* test.h - a small unit-test harness: TEST() registers a case, CHECK*() records
 * failures with file:line and keeps going; main() prints "N passed, M failed". */
#ifndef CAIRN_TEST_H
#define CAIRN_TEST_H

#include <stdio.h>
#include <string.h>

struct test_case {
    const char *name;
    void (*fn)(void);
    struct test_case *next;
};

void test_register(struct test_case *tc);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                            \
    static void test_##name(void);                                            \
    static struct test_case tc_##name = { #name, test_##name, NULL };         \
    __attribute__((constructor)) static void reg_##name(void)                 \
    {                                                                         \
        test_register(&tc_##name);                                            \
    }                                                                         \
    static void test_##name(void)

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond))                                                          \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                \
    } while (0)

#define CHECK_INT(a, b)                                                       \
    do {                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                   \
        if (a_ != b_)                                                         \
            test_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld",  \
                      #a, a_, #b, b_);                                        \
    } while (0)

#define CHECK_STR(a, b)                                                       \
    do {                                                                      \
        const char *a_ = (a), *b_ = (b);                                      \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                \
            test_fail(__FILE__, __LINE__, "%s == \"%s\", expected \"%s\"",    \
                      #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");            \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                           \
    do {                                                                      \
        const char *h_ = (hay), *n_ = (needle);                               \
        if (!h_ || !strstr(h_, n_))                                           \
            test_fail(__FILE__, __LINE__, "%s does not contain \"%s\": %s",   \
                      #hay, n_, h_ ? h_ : "(null)");                          \
    } while (0)

#endif
