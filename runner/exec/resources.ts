/**
 * Operator-granted resources: what a step may reach besides its workspace and the system folders.
 *
 * THE STEP-FACING CONTRACT (capsule authors write against this; it does not change without a new version):
 *
 *   Every resource a capsule lists in `needs` appears inside the sandbox under `/resources/<name>`, where
 *   <name> is the resource's name exactly as the runner's configuration and the capsule's `needs` spell it.
 *   Nothing else is under /resources: a name the capsule did not list is not there, granted or not.
 *
 *   - `path` grant (a host file or folder): `/resources/<name>` IS that file or folder, read-only.
 *       e.g. `cat /resources/extract/accounts.csv`, `ls /resources/config-repo`
 *   - `socket` grant (a host unix socket): `/resources/<name>/` is a read-only folder holding that one
 *     socket under its host file name. For PostgreSQL (socket `.s.PGSQL.5432`) the folder is what libpq
 *     calls the host:
 *       e.g. `psql -h /resources/db -U app -d app -c 'select 1'`  (socket /resources/db/.s.PGSQL.5432)
 *   - `tcp` grant (a loopback or private host:port): `/resources/<name>/socket` is a unix socket; every
 *     connection to it is forwarded by the runner to host:port (raw bytes, both ways; nothing is read,
 *     rewritten or logged). The step has no network of its own: it speaks to the service only through it.
 *       e.g. `curl --unix-socket /resources/web/socket http://web/health`
 *
 *   Environment: for each needed resource the step also gets `EDGE_RUNNER_RESOURCE_<NAME>` where <NAME> is
 *   the name upper-cased with every character other than A-Z and 0-9 turned into `_` (`config-repo` ->
 *   `EDGE_RUNNER_RESOURCE_CONFIG_REPO`). Its value is the path to use inside the sandbox:
 *     path   -> /resources/<name>                 (the file or folder)
 *     socket -> /resources/<name>/<socket file>   (the socket itself; its folder is dirname of it)
 *     tcp    -> /resources/<name>/socket
 *   These variables are set by the runner and win over a step's own `env` of the same name. Two needed
 *   names that give the same variable (`a-b` and `a.b`) cannot be needed together.
 *
 *   Where it applies: only in a bwrap sandbox. A capsule with `needs` requires isolation whatever its
 *   `isolation` says: on a host (or launcher) without bwrap it is refused (CAPSULE_ISOLATION_UNAVAILABLE)
 *   before anything runs, because without a mount namespace a grant could not be bound exactly.
 *
 *   Refusal: a capsule that needs a name the configuration does not grant, or a grant that cannot be bound
 *   as configured (missing on the host, a socket that is not a socket, a path overlapping the runner's
 *   state folder, a socket path too long for a unix address), is refused with CAPSULE_RESOURCE_UNGRANTED
 *   before anything runs: capsule.rejected and a signed rejection, no nonce burnt (it can come again once
 *   the operator grants it).
 *
 *   Evidence: run.started and the evidence predicate's `run.resources` carry the needed names only (sorted),
 *   never a path, a socket path or an address.
 *
 * What changes for the step's syscalls: a step with a socket or tcp grant may create AF_UNIX sockets (the
 * seccomp filter SYSCALL_FILTER_UNIX, otherwise the same as SYSCALL_FILTER); without such a grant it may
 * not. With AF_UNIX allowed, the sockets it can connect to are those its file system shows: its grants,
 * what it makes itself in its workspace and private /tmp, and any socket file inside a listed system
 * folder (the defaults /usr, /bin, /sbin, /lib*, /etc hold none on a Debian host; /run and /var are not
 * shown). Abstract unix sockets belong to the network namespace, which is the step's own.
 */
export {};
