/* tortie-cni-shim: the host-side CNI plugin. It hands one CNI call to the node's
 * tortie CNI server (cni/server.py) and prints the answer; it needs nothing from the
 * host (built static against musl by scripts/build-shim.sh). Installed as both
 * `tortie` and `tortie-ipam`: the server runs the plugin named by basename(argv[0]).
 *
 * Wire protocol, version 1 (docs/cni.md "The shim's wire protocol"); every integer
 * is an unsigned 32-bit number in network byte order (big-endian):
 *   request  "TCNI" u32 version=1
 *            u32 n_env, then n_env times: u32 len, bytes "KEY=VALUE" (the whole environ)
 *            u32 len, bytes basename(argv[0])
 *            u32 len, bytes stdin (the network configuration)
 *            CNI_NETNS, opened O_RDONLY, rides as one SCM_RIGHTS fd on the first sendmsg
 *            (no fd: CNI_NETNS unset or not openable; the server then treats it as gone)
 *   reply    u32 exit code, u32 len, bytes stdout, u32 len, bytes stderr
 * Bounds: n_env <= 4096, each string <= 128 KiB, stdin and each reply part <= 16 MiB.
 * One connection per call; the server closes it after the reply.
 *
 * The socket: the top-level key "cni_server_socket" of stdin (default below); "" is
 * refused (the shim has no in-process fallback). When the server cannot be reached or
 * the connection breaks, the shim prints a CNI error with code 11 ("try again later",
 * so the runtime retries) naming the socket, and exits 1. VERSION is answered here:
 * runtimes ask it with only {"cniVersion"} on stdin (podman validating a conflist, no
 * socket named), and must get an answer before the DaemonSet runs. VERSION_RESULT is
 * cni/spec.py's version_result(), byte for byte (tests/cni/test_install.py checks).
 * Timeouts: connecting and sending give up after 10 s (SO_SNDTIMEO); the reply has
 * none of its own (ADD may wait for policy): the runtime's deadline bounds it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#define PROTOCOL 1u
#define DEFAULT_SOCKET "/var/run/tortie/cni.sock"
#define MAX_PART (16u << 20)
#define MAX_ENV 4096u
#define MAX_ENV_STRING (128u << 10)
#define VERSION_RESULT \
    "{\"cniVersion\": \"1.0.0\", \"supportedVersions\": [\"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\"]}\n"

extern char **environ;
static char version[16] = "1.0.0"; /* the cniVersion errors are reported in */

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static int fail(int code, const char *msg, const char *details) {
    printf("{\"cniVersion\": \"%s\", \"code\": %d, \"msg\": ", version, code);
    json_string(stdout, msg);
    printf(", \"details\": ");
    json_string(stdout, details);
    printf("}\n");
    fflush(stdout);
    return 1;
}

/* The string value of `key` in the top-level JSON object `js`: 1 found (copied into out),
 * 0 absent, -1 present but not a string of at most outsize-1 bytes. Only enough JSON to
 * find keys at depth 1: strings (with escapes) and nesting; it never judges validity. */
static int top_level_string(const char *js, size_t n, const char *key, char *out, size_t outsize) {
    size_t i = 0, klen = strlen(key);
    int depth = 0;
    while (i < n) {
        char c = js[i];
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') depth--;
        if (c != '"') { i++; continue; }
        size_t start = ++i, o = 0;
        int plain = 1; /* no escapes: comparable to `key` as is */
        for (; i < n && js[i] != '"'; i++)
            if (js[i] == '\\') { plain = 0; i++; }
        size_t end = i++;
        size_t j = i;
        while (j < n && strchr(" \t\r\n", js[j])) j++;
        if (depth != 1 || j >= n || js[j] != ':') continue; /* a value, or nested */
        if (!plain || end - start != klen || memcmp(js + start, key, klen)) continue;
        for (j++; j < n && strchr(" \t\r\n", js[j]); j++) {}
        if (j >= n || js[j] != '"') return -1;
        for (j++; j < n && js[j] != '"'; j++) {
            char v = js[j];
            if (v == '\\') {
                if (++j >= n) return -1;
                v = js[j] == 'n' ? '\n' : js[j] == 't' ? '\t' : js[j];
                if (js[j] == 'u') return -1; /* no \u escapes in a path */
            }
            if (o + 1 >= outsize) return -1;
            out[o++] = v;
        }
        out[o] = '\0';
        return j < n ? 1 : -1;
    }
    return 0;
}

struct buf { char *p; size_t len, cap; };

static void put(struct buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        if (!(b->p = realloc(b->p, b->cap))) { perror("tortie-cni-shim"); exit(1); }
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(struct buf *b, uint32_t v) { v = htonl(v); put(b, &v, 4); }
static void put_part(struct buf *b, const void *d, size_t n) { put_u32(b, (uint32_t)n); put(b, d, n); }

static int read_full(int fd, void *to, size_t n) {
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)to + got, n - got);
        if (r == 0) { errno = EPIPE; return -1; }
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        got += (size_t)r;
    }
    return 0;
}

/* One reply part: u32 length, then that many bytes (malloc'd, NUL-terminated). */
static char *read_part(int fd, uint32_t *len) {
    if (read_full(fd, len, 4)) return NULL;
    *len = ntohl(*len);
    if (*len > MAX_PART) { errno = EMSGSIZE; return NULL; }
    char *p = malloc(*len + 1);
    if (!p || read_full(fd, p, *len)) { free(p); return NULL; }
    p[*len] = '\0';
    return p;
}

static int send_request(int sock, const struct buf *req, int netns_fd) {
    struct iovec iov = { req->p, req->len };
    union { char space[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    memset(&control, 0, sizeof control);
    if (netns_fd >= 0) {
        msg.msg_control = control.space;
        msg.msg_controllen = sizeof control.space;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &netns_fd, sizeof(int));
    }
    size_t sent = 0;
    while (sent < req->len) { /* the fd travels with the first bytes only */
        ssize_t r = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        sent += (size_t)r;
        iov.iov_base = req->p + sent;
        iov.iov_len = req->len - sent;
        msg.msg_control = NULL;
        msg.msg_controllen = 0;
    }
    return 0;
}

int main(int argc, char **argv) {
    struct buf in = {0}, req = {0};
    char chunk[65536], path[sizeof(((struct sockaddr_un *)0)->sun_path)], msg[512];
    ssize_t r;
    (void)argc;
    const char *command = getenv("CNI_COMMAND");
    if (command && !strcmp(command, "VERSION")) {
        fputs(VERSION_RESULT, stdout);
        return 0;
    }
    while ((r = read(0, chunk, sizeof chunk)) != 0) {
        if (r < 0) { if (errno == EINTR) continue; return fail(5, "cannot read stdin", strerror(errno)); }
        if (in.len + (size_t)r > MAX_PART) return fail(5, "the network configuration on stdin is over 16 MiB", "");
        put(&in, chunk, (size_t)r);
    }
    char found[16];
    if (top_level_string(in.p ? in.p : "", in.len, "cniVersion", found, sizeof found) == 1
        && found[0] && strspn(found, "0123456789.") == strlen(found))
        strcpy(version, found);
    int has = top_level_string(in.p ? in.p : "", in.len, "cni_server_socket", path, sizeof path);
    if (has == 0) strcpy(path, DEFAULT_SOCKET);
    if (has < 0) return fail(7, "cni_server_socket must be a string path of at most 107 bytes", "");
    if (!path[0])
        return fail(7, "cni_server_socket is \"\": the tortie CNI shim needs the node's CNI server",
                    "install the Python plugins instead (tortie-install-cni --python) to run without one");

    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    uint32_t n_env = 0;
    for (char **e = environ; *e && n_env < MAX_ENV; e++)
        if (strlen(*e) <= MAX_ENV_STRING) n_env++;
    put(&req, "TCNI", 4);
    put_u32(&req, PROTOCOL);
    put_u32(&req, n_env);
    for (char **e = environ; *e && n_env; e++)
        if (strlen(*e) <= MAX_ENV_STRING) { put_part(&req, *e, strlen(*e)); n_env--; }
    put_part(&req, name, strlen(name));
    put_part(&req, in.p, in.len);

    const char *netns = getenv("CNI_NETNS");
    int netns_fd = netns && *netns ? open(netns, O_RDONLY | O_CLOEXEC) : -1;

    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strcpy(addr.sun_path, path);
    struct timeval send_timeout = { 10, 0 };
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout)
        || connect(sock, (struct sockaddr *)&addr, sizeof addr)) {
        snprintf(msg, sizeof msg, "the tortie CNI server is not running: cannot connect to %s (%s)",
                 path, strerror(errno));
        return fail(11, msg, "is the tortie DaemonSet's pod running on this node?");
    }
    uint32_t code, out_len, err_len;
    char *out = NULL, *err = NULL;
    if (send_request(sock, &req, netns_fd) || read_full(sock, &code, 4)
        || !(out = read_part(sock, &out_len)) || !(err = read_part(sock, &err_len))) {
        snprintf(msg, sizeof msg, "the connection to the tortie CNI server at %s broke (%s)",
                 path, errno == EPIPE ? "it closed the connection" : strerror(errno));
        return fail(11, msg, "the server's log says why; the runtime will retry");
    }
    fwrite(out, 1, out_len, stdout);
    fwrite(err, 1, err_len, stderr);
    fflush(stdout);
    return (int)ntohl(code);
}
