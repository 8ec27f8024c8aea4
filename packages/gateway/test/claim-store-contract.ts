/** The behaviour of every single-use claim store (memory-engine.test.ts, redis-engine.test.ts). */
import { afterEach, describe, expect, it } from 'vitest';
import type { ClaimStore } from '../src/engine/claim-store.js';
import { eventually } from './engine-contract.js';

export interface ClaimStoreUnderTest {
  readonly store: ClaimStore;
  cleanup(): Promise<void>;
}

export function runClaimStoreContract(name: string, make: () => Promise<ClaimStoreUnderTest>): void {
  describe(`claim store contract: ${name}`, () => {
    let made: ClaimStoreUnderTest | undefined;
    afterEach(async () => {
      await made?.cleanup();
      made = undefined;
    });

    it('claims a key once until its time-to-live passes (single-use tickets)', async () => {
      made = await make();
      const { store } = made;
      const key = `ticket-${Math.random().toString(36).slice(2)}`;
      expect(await store.claimOnce(key, 150)).toBe(true);
      expect(await store.claimOnce(key, 150)).toBe(false);
      expect(await store.claimOnce(`${key}-other`, 150)).toBe(true);
      await eventually(async () => expect(await store.claimOnce(key, 60_000)).toBe(true), 15_000, 25);
      expect(await store.claimOnce(key, 60_000)).toBe(false);
    });
  });
}
