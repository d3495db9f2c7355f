/**
 * Every Postgres advisory lock key Basalt takes, in one place, so that no two features can
 * pick the same number by accident (a collision would make them wait on each other, or
 * worse, make one think the other's holder is its own leader). Keys are 32-bit integers;
 * most spell four ASCII letters so they are recognisable in pg_locks.
 *
 * Keys also appear inside SQL migrations (functions run by Postgres itself); those are
 * listed here too and must not change, since a running cluster of older instances relies
 * on them.
 */
export const ADVISORY_LOCKS = {
  /** Session lock: one instance applies migrations at a time ("basa"). */
  migrations: 0x6261_7361,
  /** Transaction lock taken by the tick() SQL function (migrations/0002_changes.sql). */
  tickSequence: 7_306_355,
  /** Session lock held by the one instance that records ticks of the change log. */
  ticker: 7_306_356,
  /** Session lock held by the one instance that dispatches change events to functions ("fsnd"). */
  functionsDispatch: 0x6673_6e64,
  /** Session lock held by the one instance sweeping storage orphans ("bstw"). */
  storageSweeper: 0x6273_7477,
  /** Transaction lock serialising signing-key creation and rotation ("auth"). */
  signingKeys: 0x6175_7468,
  /** Transaction lock of the one instance pruning the audit log at a time ("audp"). */
  auditPrune: 0x6175_6470,
  /** Transaction lock taken (try-only) by the instance pruning old usage rows ("usag"). */
  usagePrune: 0x7573_6167,
} as const;

export type AdvisoryLockName = keyof typeof ADVISORY_LOCKS;

/**
 * Namespaces of keyed locks, taken with the two-argument form
 * `pg_advisory_xact_lock(namespace, hashtext(key))`. Postgres keeps two-argument locks apart
 * from the one-argument keys above, so a hashed key can never meet one of those.
 */
export const ADVISORY_LOCK_NAMESPACES = {
  /** Per-key "at most once per interval" claims (one mail per address a minute) ("rate"). */
  intervalClaims: 0x7261_7465,
  /** Deploys of one function name, one at a time, so versions count up without gaps ("fdep"). */
  functionDeploys: 0x6664_6570,
} as const;
