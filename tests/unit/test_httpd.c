/* core/httpd: the HTTP server over real loopback sockets. */
#include "http_test.h"

TEST(httpd_pipelining_errors_and_timeouts)
{
    struct srv s;
    srv_start(&s, NULL);
    pthread_create(&s.th, NULL, srv_thread, &s);

    /* two pipelined requests in one write: two responses, in order */
    int fd = dial(s.port);
    send_str(fd, "GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\n"
                 "Content-Length: 3\r\n\r\nxyz");
    char *out = read_all(fd, "body=", 2);
    CHECK_CONTAINS(out, "GET /one body=0:");
    CHECK_CONTAINS(out, "POST /two body=3:xyz");
    CHECK(strstr(out, "/one") < strstr(out, "/two"));
    CHECK_CONTAINS(out, "X-Test: yes\r\n");
    free(out);
    close(fd);

    /* malformed: 400 then the server closes */
    fd = dial(s.port);
    send_str(fd, "GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    out = read_all(fd, NULL, 0);
    CHECK(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CHECK_CONTAINS(out, "Connection: close\r\n");
    free(out);
    close(fd);

    /* header read timeout: 408 */
    fd = dial(s.port);
    send_str(fd, "GET / HTTP/1.1\r\nHost: a\r\n");
    out = read_all(fd, NULL, 0);
    CHECK(strncmp(out, "HTTP/1.1 408 ", 13) == 0);
    free(out);
    close(fd);

    /* chunked request body, fed one byte per write */
    fd = dial(s.port);
    const char *req = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                      "Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    for (const char *p = req; *p; p++)
        CHECK_INT(write(fd, p, 1), 1);
    out = read_all(fd, NULL, 0);
    CHECK_CONTAINS(out, "POST /c body=5:abcde");
    CHECK_CONTAINS(out, "Connection: close");
    free(out);
    close(fd);

    /* streamed (chunked) response and a delayed response on one connection */
    fd = dial(s.port);
    send_str(fd, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    out = read_all(fd, "slow\n", 1);
    CHECK_CONTAINS(out, "Transfer-Encoding: chunked\r\n\r\n6\r\npart1-\r\n5\r\npart2\r\n0\r\n\r\n");
    CHECK_CONTAINS(out, "Content-Length: 5\r\n");
    free(out);
    close(fd);

    /* HEAD: headers with the length, no body */
    fd = dial(s.port);
    send_str(fd, "HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    out = read_all(fd, NULL, 0);
    CHECK_CONTAINS(out, "Content-Length: 15\r\n");
    CHECK(strstr(out, "body=") == NULL);
    free(out);
    close(fd);

    srv_stop(&s, true);
}
