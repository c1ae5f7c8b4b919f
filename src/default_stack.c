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
    "  # The sample workload: three instances of the demo web application.\n"
    "  app-1: {role: demo-app, listen: [\"127.0.0.1:9101\"], threads: 1}\n"
    "  app-2: {role: demo-app, listen: [\"127.0.0.1:9102\"], threads: 1}\n"
    "  app-3: {role: demo-app, listen: [\"127.0.0.1:9103\"], threads: 1}\n";
