/* default_stack.c - the embedded default stack (`cairn config default`).
 *
 * Only roles that exist in this build appear here; each block joins the default
 * stack on the ports ARCHITECTURE.md fixes for it as it lands.
 */
#include "default_stack.h"

const char cairn_default_stack[] =
    "# cairn default stack: what `cairn up` runs when no -c FILE is given.\n"
    "# Print it with `cairn config default > cairn.yaml`, edit, then `cairn up -c cairn.yaml`.\n"
    "data_dir: cairn-data\n"
    "log: {level: info, format: logfmt}\n"
    "\n"
    "services:\n"
    "  # The load balancer in front of the three app instances.\n"
    "  lb:\n"
    "    role: edge\n"
    "    listen: [{address: \"127.0.0.1:8090\"}]\n"
    "    admin: \"127.0.0.1:9902\"\n"
    "    access_log: true\n"
    "    routes: [{path: /, backend: app}]\n"
    "    backends:\n"
    "      app:\n"
    "        servers: [\"127.0.0.1:9101\", \"127.0.0.1:9102\", \"127.0.0.1:9103\"]\n"
    "        balance: least_conn\n"
    "        health: {http: {path: /healthz}, interval: 2s, timeout: 1s, rise: 2, fall: 2}\n"
    "        retries: 2\n"
    "\n"
    "  # The sample workload: three instances of the demo web application.\n"
    "  app-1: {role: demo-app, listen: [\"127.0.0.1:9101\"], threads: 1}\n"
    "  app-2: {role: demo-app, listen: [\"127.0.0.1:9102\"], threads: 1}\n"
    "  app-3: {role: demo-app, listen: [\"127.0.0.1:9103\"], threads: 1}\n";
