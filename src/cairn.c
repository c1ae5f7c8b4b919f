/* cairn.c - the command line: up, run, check, config, version, help.
 *
 * Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
 */
#include "default_stack.h"
#include "demo_app/demo_app.h"
#include "dns/dns.h"
#include "edge/edge.h"
#include "metrics/prom.h"
#include "alerts/alerts.h"
#include "s3/s3.h"
#include "registry/registry.h"
#include "logs/logs.h"
#include "logagent/logagent.h"
#include "traces/traces.h"
#include "backup/backup.h"
#include "ui/ui.h"
#include "deploy_k8s.h"
#include "core/log.h"
#include "core/stack.h"
#include "core/supervisor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

static const struct role_ops *const roles[] = {
    &demo_app_role,
    &dns_role,
    &edge_role,
    &prom_role,
    &alerts_role,
    &s3_role,
    &registry_role,
    &logs_role,
    &log_agent_role,
    &traces_role,
    &backup_role,
    &ui_role,
    NULL,
};

struct command {
    const char *name;
    const char *synopsis;
    const char *help;
    int (*run)(int argc, char **argv);
};

static const struct command *find_command(const char *name);

/* Options shared by the commands: -c FILE and the remaining operands. */
struct opts {
    const char *config;
    char **args;
    int nargs;
};

static int parse_opts(const char *cmd, int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->args = calloc((size_t)argc + 1, sizeof(char *));
    if (!o->args)
        return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "cairn %s: %s needs a file name\n", cmd, a);
                return EXIT_USAGE;
            }
            o->config = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            o->config = a + 9;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            const struct command *c = find_command(cmd);
            printf("usage: cairn %s\n\n%s", c->synopsis, c->help);
            exit(0);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "cairn %s: unknown option %s (try: cairn help %s)\n", cmd, a, cmd);
            return EXIT_USAGE;
        } else {
            o->args[o->nargs++] = argv[i];
        }
    }
    return 0;
}

static void print_errors(const struct cfg_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "%s\n", e->msgs[i]);
}

/* Loads -c FILE or the embedded default stack. Prints errors; returns 0 or 2. */
static int load(const struct opts *o, struct stack *st)
{
    struct cfg_errors errs = { 0 };
    int r = o->config ? stack_load(st, o->config, NULL, roles, &errs)
                      : stack_load(st, "<default>", cairn_default_stack, roles, &errs);
    if (r) {
        print_errors(&errs);
        fprintf(stderr, "%s: %zu error%s\n", o->config ? o->config : "<default>", errs.n,
                errs.n == 1 ? "" : "s");
        cfg_errors_free(&errs);
        stack_free(st);
        return EXIT_USAGE;
    }
    cfg_errors_free(&errs);
    log_setup(st->log_level, st->log_format);
    return 0;
}

static void list_services(FILE *f, const struct stack *st)
{
    for (size_t i = 0; i < st->nservices; i++)
        fprintf(f, "%s%s", i ? ", " : "", st->services[i].name);
}

static int cmd_up(int argc, char **argv)
{
    struct opts o;
    struct stack st;
    int r = parse_opts("up", argc, argv, &o);
    if (r || (r = load(&o, &st))) {
        free(o.args);
        return r;
    }
    const struct service **sel = calloc((size_t)o.nargs + 1, sizeof(*sel));
    if (!sel) {
        free(o.args);
        stack_free(&st);
        return 1;
    }
    for (int i = 0; i < o.nargs; i++) {
        sel[i] = stack_find(&st, o.args[i]);
        if (!sel[i]) {
            fprintf(stderr, "cairn up: no service named \"%s\" in %s (services: ", o.args[i], st.file);
            list_services(stderr, &st);
            fprintf(stderr, ")\n");
            free(sel);
            free(o.args);
            stack_free(&st);
            return EXIT_USAGE;
        }
    }
    r = supervisor_run(&st, sel, (size_t)o.nargs, stdout);
    free(sel);
    free(o.args);
    stack_free(&st);
    return r;
}

static int cmd_run(int argc, char **argv)
{
    struct opts o;
    struct stack st;
    int r = parse_opts("run", argc, argv, &o);
    if (r) {
        free(o.args);
        return r;
    }
    if (o.nargs != 1) {
        fprintf(stderr, "cairn run: expected exactly one SERVICE (usage: cairn run SERVICE -c FILE)\n");
        free(o.args);
        return EXIT_USAGE;
    }
    if ((r = load(&o, &st))) {
        free(o.args);
        return r;
    }
    const struct service *svc = stack_find(&st, o.args[0]);
    if (!svc) {
        fprintf(stderr, "cairn run: no service named \"%s\" in %s (services: ", o.args[0], st.file);
        list_services(stderr, &st);
        fprintf(stderr, ")\n");
        free(o.args);
        stack_free(&st);
        return EXIT_USAGE;
    }
    log_set_service(svc->name);
    r = svc->role->main(svc);
    free(o.args);
    stack_free(&st);
    return r;
}

static int cmd_check(int argc, char **argv)
{
    struct opts o;
    struct stack st;
    int r = parse_opts("check", argc, argv, &o);
    if (r) {
        free(o.args);
        return r;
    }
    if (o.nargs) {
        fprintf(stderr, "cairn check: unexpected argument \"%s\" (usage: cairn check -c FILE)\n", o.args[0]);
        free(o.args);
        return EXIT_USAGE;
    }
    stack_set_lookups(false);
    if ((r = load(&o, &st))) {
        free(o.args);
        return r;
    }
    printf("%s: OK, %zu service%s:", st.file, st.nservices, st.nservices == 1 ? "" : "s");
    for (size_t i = 0; i < st.nservices; i++)
        printf(" %s (%s)%s", st.services[i].name, st.services[i].role->name,
               i + 1 < st.nservices ? "," : "");
    printf("\n");
    free(o.args);
    stack_free(&st);
    return 0;
}

static int cmd_deploy(int argc, char **argv)
{
    const char *config = NULL, *out = "kubernetes", *image = NULL;
    if (argc < 1 || strcmp(argv[0], "kubernetes")) {
        fprintf(stderr, "cairn deploy: expected \"kubernetes\" (usage: cairn deploy kubernetes -c FILE [-o DIR] "
                        "[--image IMAGE])\n");
        return EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "-c") || !strcmp(a, "--config") ? &config
                           : !strcmp(a, "-o") || !strcmp(a, "--output") ? &out
                           : !strcmp(a, "--image") ? &image : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            const struct command *c = find_command("deploy");
            printf("usage: cairn %s\n\n%s", c->synopsis, c->help);
            return 0;
        }
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "cairn deploy: %s %s (try: cairn help deploy)\n", a, dst ? "needs a value" : "is not an option");
            return EXIT_USAGE;
        }
        *dst = argv[++i];
    }
    char img[128];
    if (!image) {
        snprintf(img, sizeof(img), "cairn:%s", CAIRN_VERSION);
        image = img;
    }
    stack_set_lookups(false);
    return deploy_kubernetes(config ? config : "<default>", config ? NULL : cairn_default_stack, out, image, roles);
}

static int cmd_config(int argc, char **argv)
{
    if (argc != 1 || strcmp(argv[0], "default") != 0) {
        fprintf(stderr, "cairn config: expected \"default\" (usage: cairn config default)\n");
        return EXIT_USAGE;
    }
    fputs(cairn_default_stack, stdout);
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    UNUSED(argv);
    if (argc) {
        fprintf(stderr, "cairn version: takes no arguments\n");
        return EXIT_USAGE;
    }
    printf("cairn %s\n", CAIRN_VERSION);
    return 0;
}

static int cmd_help(int argc, char **argv);

/* backup, snapshots, restore, repo: the backup role's commands */
static int run_backup_cmd(const char *name, int argc, char **argv)
{
    int r = backup_cmd(name, argc, argv, roles);
    if (r < 0) {
        const struct command *c = find_command(name);
        printf("usage: cairn %s\n\n%s", c->synopsis, c->help);
        return 0;
    }
    return r;
}

static int cmd_backup(int argc, char **argv) { return run_backup_cmd("backup", argc, argv); }
static int cmd_snapshots(int argc, char **argv) { return run_backup_cmd("snapshots", argc, argv); }
static int cmd_restore(int argc, char **argv) { return run_backup_cmd("restore", argc, argv); }
static int cmd_repo(int argc, char **argv) { return run_backup_cmd("repo", argc, argv); }

static const struct command commands[] = {
    { "up", "up [-c FILE] [SERVICE...]",
      "Runs the stack in the foreground: every service (or the ones named) as a child\n"
      "process, restarted with backoff if it crashes. Prints a table of endpoints once\n"
      "all are ready. SIGINT/SIGTERM stop everything. Without -c, runs the embedded\n"
      "default stack (see `cairn config default`).\n",
      cmd_up },
    { "run", "run SERVICE [-c FILE]",
      "Runs one service of the stack in this process (what a Kubernetes pod runs).\n",
      cmd_run },
    { "check", "check [-c FILE]",
      "Validates a stack file and reports every error as FILE:LINE:COL: KEY: problem.\n"
      "Exits 0 when the file is valid, 2 otherwise.\n",
      cmd_check },
    { "config", "config default", "Prints the embedded default stack file.\n", cmd_config },
    { "deploy", "deploy kubernetes [-c FILE] [-o DIR] [--image IMAGE]",
      "Writes a kustomize base for the stack (default: the embedded default stack) to DIR\n"
      "(default ./kubernetes): per service a\n"
      "Service and a Deployment, a StatefulSet with a volume (roles with a store) or a\n"
      "DaemonSet (the log agent), a PodDisruptionBudget and a NetworkPolicy; the stack\n"
      "file, its addresses made for the cluster, as a generated ConfigMap. The image\n"
      "defaults to cairn:VERSION (`make image`). Apply with: kubectl apply -k DIR\n",
      cmd_deploy },
    { "backup", "backup -c FILE JOB [--backup NAME] [-q]",
      "Runs one job of the stack file's backup service now (whether or not the service\n"
      "runs: the repository's locks keep the two apart), creating the repository on\n"
      "first use as `restic init` would; forget and prune follow when the job has keep:.\n",
      cmd_backup },
    { "snapshots", "snapshots -c FILE [--json] [--backup NAME]",
      "Lists the snapshots in the backup service's repository (--json: as restic's).\n", cmd_snapshots },
    { "restore", "restore -c FILE SNAPSHOT --target DIR | restore -c FILE [SNAPSHOT] --service NAME",
      "Restores a snapshot (an id or its prefix, or latest) under DIR, or puts the latest\n"
      "(or the given) backup of a store service back as its data directory, which must\n"
      "be absent or empty: the service then starts on it.\n",
      cmd_restore },
    { "repo", "repo check|forget|prune|init|unlock -c FILE [--read-data] [--keep-last N ...] [--job JOB] [--prune]",
      "Works on the backup service's repository: check its structure (and with\n"
      "--read-data every pack); forget snapshots by a restic --keep-* policy (of one\n"
      "--job, or all) and with --prune drop what no snapshot uses; prune alone; init a\n"
      "new repository; unlock removes stale locks.\n",
      cmd_repo },
    { "version", "version", "Prints the version.\n", cmd_version },
    { "help", "help [COMMAND]", "Shows help for cairn or one of its commands.\n", cmd_help },
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "cairn %s - the cloud-native reference infrastructure, in C\n\n"
               "usage:\n", CAIRN_VERSION);
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        fprintf(f, "  cairn %s\n", commands[i].synopsis);
    fprintf(f, "\nroles in this build:\n");
    for (size_t i = 0; roles[i]; i++)
        fprintf(f, "  %-10s %s\n", roles[i]->name, roles[i]->summary);
    fprintf(f, "\nExit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n");
}

static int cmd_help(int argc, char **argv)
{
    if (argc == 0) {
        usage(stdout);
        return 0;
    }
    const struct command *c = find_command(argv[0]);
    if (!c || argc > 1) {
        fprintf(stderr, "cairn help: no command \"%s\"\n", argv[0]);
        return EXIT_USAGE;
    }
    printf("usage: cairn %s\n\n%s", c->synopsis, c->help);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return cmd_help(0, NULL);
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(0, NULL);
    const struct command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "cairn: unknown command \"%s\" (try: cairn help)\n", argv[1]);
        return EXIT_USAGE;
    }
    return c->run(argc - 2, argv + 2);
}
