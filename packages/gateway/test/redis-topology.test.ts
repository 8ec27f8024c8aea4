/**
 * Smoke tests of the topology fixtures (test/support/redis-topology.ts) with real processes: a Sentinel group
 * fails over on request and after a crash, a Cluster routes keys where slotOf says, moves a slot with its keys,
 * promotes a replica when its primary dies and takes the old primary back, and frozen nodes answer nothing.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  type RedisClusterFixture,
  type RedisNode,
  type SentinelGroup,
  slotOf,
  startRedisCluster,
  startSentinelGroup,
} from './support/redis-topology.js';
import { waitFor } from './support/wait.js';

/** Starting a topology spawns several servers and waits for them to agree: slow on a loaded 2-core box. */
const START_DEADLINE_MS = 60_000;
/** A command to a frozen node that has no answer by then has none coming. */
const FROZEN_COMMAND_TIMEOUT_MS = 500;

/** A short-lived admin connection to one node; always closed. */
async function withClient<T>(
  node: { host: string; port: number },
  use: (client: Redis) => Promise<T>,
  commandTimeoutMs = 5_000,
): Promise<T> {
  const client = new Redis({
    host: node.host,
    port: node.port,
    protocol: 2,
    lazyConnect: true,
    // connect() resolves on the TCP connect, so a frozen node shows up as a command that never gets an answer.
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    commandTimeout: commandTimeoutMs,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

const role = (node: { host: string; port: number }) =>
  withClient(node, async (client) => String(((await client.call('ROLE')) as unknown[])[0]));

/** ROLE of a replica: [ 'slave', masterHost, masterPort, state, offset ]. */
const replicaOf = (node: { host: string; port: number }) =>
  withClient(node, async (client) => {
    const reply = (await client.call('ROLE')) as unknown[];
    return reply[0] === 'slave' && reply[3] === 'connected' ? Number(reply[2]) : undefined;
  });

describe('sentinel group', () => {
  let group: SentinelGroup;

  beforeAll(async () => {
    const started = Date.now();
    group = await startSentinelGroup();
    console.info(`sentinel group of 1 primary + 1 replica + 3 sentinels started in ${Date.now() - started} ms`);
  }, START_DEADLINE_MS);

  afterAll(async () => {
    await group?.stop();
  });

  test('starts with the replica attached and the sentinels agreeing on the primary', async () => {
    expect(group.name).toBe('sse-test');
    expect(group.replicas).toHaveLength(1);
    expect(group.sentinels).toHaveLength(3);
    expect(group.url).toBe(
      `redis+sentinel://${group.sentinelAddresses.map((a) => `${a.host}:${a.port}`).join(',')}/sse-test`,
    );
    expect(await group.currentPrimary()).toEqual({ host: '127.0.0.1', port: group.primary.port });
    expect(await replicaOf(group.replicas[0] as RedisNode)).toBe(group.primary.port);
  });

  test('failover() promotes the replica, which has the data', async () => {
    const replica = group.replicas[0] as RedisNode;
    await withClient(group.primary, async (client) => {
      await client.set('topology:before-failover', 'kept');
      // WAIT: the write is on the replica before the failover, so the check below is about promotion only.
      expect(await client.call('WAIT', '1', '5000')).toBe(1);
    });
    const started = Date.now();
    const promoted = await group.failover();
    console.info(`sentinel failover() took ${Date.now() - started} ms`);
    expect(promoted).toEqual({ host: '127.0.0.1', port: replica.port });
    expect(await group.currentPrimary()).toEqual(promoted);
    expect(await role(replica)).toBe('master');
    expect(await withClient(replica, (client) => client.get('topology:before-failover'))).toBe('kept');
  });

  test('a SIGKILLed primary is replaced (waitForNewPrimary)', async () => {
    const oldPrimary = group.primary;
    const current = group.replicas[0] as RedisNode;
    // The sentinels turn the old primary into a replica of the new one some seconds after the failover; only
    // then is there a replica to promote.
    const converted = Date.now();
    await waitFor(async () => (await replicaOf(oldPrimary)) === current.port, {
      timeoutMs: 45_000,
      intervalMs: 100,
      what: 'the old primary to become a replica of the promoted one',
    });
    console.info(`old primary became a replica ${Date.now() - converted} ms after failover() resolved`);
    await current.kill('SIGKILL');
    expect(current.pid).toBeUndefined();
    const started = Date.now();
    const promoted = await group.waitForNewPrimary({ host: current.host, port: current.port });
    console.info(`sentinel promotion after SIGKILL took ${Date.now() - started} ms`);
    expect(promoted).toEqual({ host: '127.0.0.1', port: oldPrimary.port });
    expect(await role(oldPrimary)).toBe('master');
  }, 90_000);
});

describe('cluster', () => {
  let cluster: RedisClusterFixture;

  beforeAll(async () => {
    const started = Date.now();
    cluster = await startRedisCluster();
    console.info(`cluster of 3 primaries + 3 replicas started in ${Date.now() - started} ms`);
  }, START_DEADLINE_MS);

  afterAll(async () => {
    await cluster?.stop();
  });

  test('starts healthy with one connected replica per primary', async () => {
    await cluster.waitForHealthy();
    expect(cluster.primaries).toHaveLength(3);
    expect(cluster.replicas).toHaveLength(3);
    expect(cluster.nodes).toHaveLength(6);
    expect(cluster.url).toBe(`redis+cluster://${cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`);
    for (const [index, replica] of cluster.replicas.entries()) {
      expect(await replicaOf(replica)).toBe(cluster.primaries[index]?.port);
    }
    for (const primary of cluster.primaries) expect(await role(primary)).toBe('master');
  });

  test('slotOf matches CLUSTER KEYSLOT and keys land on slotOwner(slotOf(key))', async () => {
    const keys = [
      '',
      'a',
      '123456789',
      'user:1000',
      '{user1000}.following',
      'foo{}{bar}',
      'foo{{bar}}zap',
      'ключ',
      '{🙂}x',
    ];
    const primary = cluster.primaries[0] as RedisNode;
    for (const key of keys) {
      expect(slotOf(key), key).toBe(await withClient(primary, (client) => client.cluster('KEYSLOT', key)));
    }
    expect(slotOf('123456789')).toBe(0x31c3); // The CRC16-XMODEM check value.
    for (const key of ['topology:a', 'topology:b', 'topology:c', 'topology:d']) {
      const owner = await cluster.slotOwner(slotOf(key));
      // A plain (non-cluster) client: the owner accepts the key without MOVED, others redirect.
      expect(await withClient(owner, (client) => client.set(key, key))).toBe('OK');
      const other = cluster.primaries.find((node) => node !== owner) as RedisNode;
      await expect(withClient(other, (client) => client.get(key))).rejects.toThrow(/MOVED/);
    }
  });

  test('moveSlot moves a slot with its keys', async () => {
    const slot = slotOf('{moving}');
    const source = await cluster.slotOwner(slot);
    const target = cluster.primaries.find((node) => node !== source) as RedisNode;
    const count = 250; // More than one MIGRATE batch.
    await withClient(source, async (client) => {
      const pipeline = client.pipeline();
      for (let index = 0; index < count; index++) pipeline.set(`{moving}:${index}`, `value-${index}`);
      await pipeline.exec();
    });
    const started = Date.now();
    await cluster.moveSlot(slot, target);
    console.info(`moveSlot of ${count} keys took ${Date.now() - started} ms`);
    expect(await cluster.slotOwner(slot)).toBe(target);
    expect(await withClient(target, (client) => client.get('{moving}:0'))).toBe('value-0');
    expect(await withClient(target, (client) => client.get(`{moving}:${count - 1}`))).toBe(`value-${count - 1}`);
    expect(await withClient(target, (client) => client.cluster('COUNTKEYSINSLOT', slot))).toBe(count);
    expect(await withClient(source, (client) => client.cluster('COUNTKEYSINSLOT', slot))).toBe(0);
    await expect(withClient(source, (client) => client.get('{moving}:0'))).rejects.toThrow(/MOVED/);
    await cluster.waitForHealthy();
  });

  test('freeze() leaves the socket open with nothing answering; thaw() brings it back', async () => {
    const node = cluster.replicas[1] as RedisNode;
    const pid = node.pid;
    node.freeze();
    try {
      await expect(withClient(node, (client) => client.ping(), FROZEN_COMMAND_TIMEOUT_MS)).rejects.toThrow(
        /timed out/i,
      );
    } finally {
      node.thaw();
    }
    expect(await withClient(node, (client) => client.ping())).toBe('PONG');
    expect(node.pid).toBe(pid);
    await cluster.waitForHealthy();
  });

  test('SIGKILL of a primary promotes its replica; restart() brings the old primary back as a replica', async () => {
    const victim = await cluster.slotOwner(0);
    const index = cluster.primaries.indexOf(victim);
    const replica = cluster.replicas[index] as RedisNode;
    const nodeId = await withClient(victim, (client) => client.cluster('MYID'));
    await victim.kill('SIGKILL');
    expect(victim.pid).toBeUndefined();
    let started = Date.now();
    await cluster.waitForHealthy();
    console.info(`cluster promotion after SIGKILL took ${Date.now() - started} ms`);
    expect(await cluster.slotOwner(0)).toBe(replica);
    expect(await role(replica)).toBe('master');

    started = Date.now();
    await victim.restart();
    expect(victim.pid).toBeTypeOf('number');
    // Same nodes.conf, same identity: the cluster tells it that its slots moved on and it follows the new owner.
    expect(await withClient(victim, (client) => client.cluster('MYID'))).toBe(nodeId);
    await waitFor(async () => (await replicaOf(victim)) === replica.port, {
      timeoutMs: 30_000,
      what: 'the restarted primary to rejoin as a replica of its promoted replica',
    });
    await cluster.waitForHealthy();
    console.info(`restarted primary rejoined as a replica in ${Date.now() - started} ms`);
  }, 90_000);
});
