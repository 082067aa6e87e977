import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  consistencyProof,
  hashChildren,
  hashLeaf,
  inclusionProof,
  nodeReaderFromLeafHashes,
  rootFromLeafHashes,
  rootFromNodes,
  verifyConsistency,
  verifyInclusion,
  type NodeReader,
} from '../../../runner/log/merkle.js';
import { codeOf as rejects } from '../../helpers/codes.js';

const MAX_SIZE = 300;
const leafHashes = Array.from({ length: MAX_SIZE }, (_, i) => hashLeaf(Buffer.from(`record ${i}`)));
const read: NodeReader = nodeReaderFromLeafHashes(leafHashes);
const roots = Array.from({ length: MAX_SIZE + 1 }, (_, size) => rootFromNodes(size, read));

const sizeAndIndex = fc.integer({ min: 1, max: MAX_SIZE }).chain((size) => fc.tuple(fc.constant(size), fc.nat({ max: size - 1 })));
const twoSizes = fc.integer({ min: 1, max: MAX_SIZE }).chain((size2) => fc.tuple(fc.integer({ min: 1, max: size2 }), fc.constant(size2)));

function sameProof(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.length === b.length && a.every((hash, i) => hash.equals(b[i]!));
}

function flipBit(proof: Buffer[], element: number, bit: number): Buffer[] {
  const copy = proof.map((hash) => Buffer.from(hash));
  const target = copy[element % copy.length]!;
  target[Math.floor(bit / 8) % target.length]! ^= 1 << (bit % 8);
  return copy;
}

describe('rootFromNodes', () => {
  it('equals the one-pass root for every size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_SIZE }), (size) => {
        expect(roots[size]).toEqual(rootFromLeafHashes(leafHashes.slice(0, size)));
      }),
    );
  });
});

describe('inclusion proofs', () => {
  describe('when generated for a random size and index', () => {
    it('verify against the root of that size', () => {
      fc.assert(
        fc.property(sizeAndIndex, ([size, index]) => {
          verifyInclusion(index, size, leafHashes[index]!, inclusionProof(index, size, read), roots[size]!);
        }),
      );
    });
  });

  describe('when one bit of one element is flipped', () => {
    it('are rejected with LOG_PROOF_INVALID', () => {
      fc.assert(
        fc.property(
          sizeAndIndex.filter(([size]) => size > 1),
          fc.nat(),
          fc.nat({ max: 255 }),
          ([size, index], element, bit) => {
            const proof = flipBit(inclusionProof(index, size, read), element, bit);
            expect(rejects(() => verifyInclusion(index, size, leafHashes[index]!, proof, roots[size]!))).toBe('LOG_PROOF_INVALID');
          },
        ),
      );
    });
  });

  describe('when an element is removed', () => {
    it('are rejected with LOG_PROOF_INVALID', () => {
      fc.assert(
        fc.property(
          sizeAndIndex.filter(([size]) => size > 1),
          fc.nat(),
          ([size, index], position) => {
            const proof = inclusionProof(index, size, read);
            proof.splice(position % proof.length, 1);
            expect(rejects(() => verifyInclusion(index, size, leafHashes[index]!, proof, roots[size]!))).toBe('LOG_PROOF_INVALID');
          },
        ),
      );
    });
  });

  describe('when an element is added', () => {
    it('are rejected with LOG_PROOF_INVALID', () => {
      fc.assert(
        fc.property(sizeAndIndex, fc.nat(), fc.uint8Array({ minLength: 32, maxLength: 32 }), ([size, index], position, extra) => {
          const proof = inclusionProof(index, size, read);
          proof.splice(position % (proof.length + 1), 0, Buffer.from(extra));
          expect(rejects(() => verifyInclusion(index, size, leafHashes[index]!, proof, roots[size]!))).toBe('LOG_PROOF_INVALID');
        }),
      );
    });
  });

  describe('when checked with another index', () => {
    it('are rejected', () => {
      fc.assert(
        fc.property(sizeAndIndex, fc.integer({ min: -2, max: MAX_SIZE + 2 }), ([size, index], otherIndex) => {
          fc.pre(otherIndex !== index);
          const proof = inclusionProof(index, size, read);
          const code = rejects(() => verifyInclusion(otherIndex, size, leafHashes[index]!, proof, roots[size]!));
          expect(['LOG_PROOF_INVALID', 'LOG_INDEX_OUT_OF_RANGE']).toContain(code);
        }),
      );
    });
  });

  describe('when checked with another size (against the root a checkpoint of that size would carry)', () => {
    it('are rejected', () => {
      fc.assert(
        fc.property(sizeAndIndex, fc.integer({ min: 0, max: MAX_SIZE }), ([size, index], otherSize) => {
          fc.pre(otherSize !== size);
          const proof = inclusionProof(index, size, read);
          // Where the path of `index` is the same in both trees the proof is genuinely valid for both.
          fc.pre(!(index < otherSize && sameProof(inclusionProof(index, otherSize, read), proof)));
          const code = rejects(() => verifyInclusion(index, otherSize, leafHashes[index]!, proof, roots[otherSize]!));
          expect(['LOG_PROOF_INVALID', 'LOG_INDEX_OUT_OF_RANGE']).toContain(code);
        }),
      );
    });
  });

  describe('when checked against the wrong leaf', () => {
    it('are rejected with LOG_PROOF_INVALID', () => {
      fc.assert(
        fc.property(sizeAndIndex, ([size, index]) => {
          const proof = inclusionProof(index, size, read);
          const wrongLeaf = hashLeaf(Buffer.from(`record ${index}!`));
          expect(rejects(() => verifyInclusion(index, size, wrongLeaf, proof, roots[size]!))).toBe('LOG_PROOF_INVALID');
        }),
      );
    });
  });
});

describe('consistency proofs', () => {
  describe('when generated for random sizes', () => {
    it('verify between the two roots', () => {
      fc.assert(
        fc.property(twoSizes, ([size1, size2]) => {
          verifyConsistency(size1, size2, consistencyProof(size1, size2, read), roots[size1]!, roots[size2]!);
        }),
      );
    });
  });

  describe('when one bit of one element is flipped', () => {
    it('are rejected with LOG_CONSISTENCY_INVALID', () => {
      fc.assert(
        fc.property(twoSizes, fc.nat(), fc.nat({ max: 255 }), ([size1, size2], element, bit) => {
          const genuine = consistencyProof(size1, size2, read);
          fc.pre(genuine.length > 0);
          const proof = flipBit(genuine, element, bit);
          expect(rejects(() => verifyConsistency(size1, size2, proof, roots[size1]!, roots[size2]!))).toBe('LOG_CONSISTENCY_INVALID');
        }),
      );
    });
  });

  describe('when an element is removed or added', () => {
    it('are rejected with LOG_CONSISTENCY_INVALID', () => {
      fc.assert(
        fc.property(twoSizes, fc.nat(), fc.boolean(), ([size1, size2], position, add) => {
          const proof = consistencyProof(size1, size2, read);
          if (add) proof.splice(position % (proof.length + 1), 0, hashLeaf(Buffer.from('extra')));
          else {
            fc.pre(proof.length > 0);
            proof.splice(position % proof.length, 1);
          }
          expect(rejects(() => verifyConsistency(size1, size2, proof, roots[size1]!, roots[size2]!))).toBe('LOG_CONSISTENCY_INVALID');
        }),
      );
    });
  });

  describe('when checked with other sizes (against the roots checkpoints of those sizes would carry)', () => {
    it('are rejected', () => {
      fc.assert(
        fc.property(twoSizes, fc.integer({ min: 0, max: MAX_SIZE }), fc.boolean(), ([size1, size2], other, changeFirst) => {
          const proof = consistencyProof(size1, size2, read);
          const [s1, s2] = changeFirst ? [other, size2] : [size1, other];
          fc.pre(s1 !== size1 || s2 !== size2);
          fc.pre(!(s1 > 0 && s1 <= s2 && sameProof(consistencyProof(s1, s2, read), proof)));
          const code = rejects(() => verifyConsistency(s1, s2, proof, roots[s1]!, roots[s2]!));
          expect(['LOG_CONSISTENCY_INVALID', 'LOG_SIZE_OUT_OF_RANGE']).toContain(code);
        }),
      );
    });
  });

  describe('when the later tree rewrote an earlier leaf', () => {
    it('are rejected with LOG_CONSISTENCY_INVALID', () => {
      fc.assert(
        fc.property(
          twoSizes.filter(([size1, size2]) => size1 < size2),
          fc.nat(),
          ([size1, size2], victim) => {
            const rewritten = [...leafHashes.slice(0, size2)];
            rewritten[victim % size1] = hashLeaf(Buffer.from('rewritten'));
            const forgedReader = nodeReaderFromLeafHashes(rewritten);
            const proof = consistencyProof(size1, size2, forgedReader);
            const forgedRoot = rootFromNodes(size2, forgedReader);
            expect(rejects(() => verifyConsistency(size1, size2, proof, roots[size1]!, forgedRoot))).toBe('LOG_CONSISTENCY_INVALID');
          },
        ),
      );
    });
  });
});

describe('proofs in very large trees', () => {
  // A tree whose leaves are all equal has one hash per level, so a reader can serve trees of up to 2^52
  // leaves: enough to show that no index arithmetic wraps at 32 bits.
  const levelHashes = [hashLeaf(Buffer.from('same'))];
  for (let level = 1; level <= 53; level++) levelHashes.push(hashChildren(levelHashes[level - 1]!, levelHashes[level - 1]!));
  const uniform: NodeReader = (level) => levelHashes[level]!;
  const bigSize = fc.integer({ min: 2 ** 31, max: 2 ** 52 });

  describe('when generated for a random size and index above 2^31', () => {
    it('verify, and a flipped bit is rejected', () => {
      fc.assert(
        fc.property(
          bigSize.chain((size) => fc.tuple(fc.constant(size), fc.integer({ min: 0, max: size - 1 }))),
          fc.nat(),
          ([size, index], bit) => {
            const root = rootFromNodes(size, uniform);
            const proof = inclusionProof(index, size, uniform);
            verifyInclusion(index, size, levelHashes[0]!, proof, root);
            expect(rejects(() => verifyInclusion(index, size, levelHashes[0]!, flipBit(proof, bit, bit % 256), root))).toBe('LOG_PROOF_INVALID');
          },
        ),
      );
    });
  });

  describe('when consistency is proven between two sizes above 2^31', () => {
    it('verifies', () => {
      fc.assert(
        fc.property(
          bigSize.chain((size2) => fc.tuple(fc.integer({ min: 1, max: size2 }), fc.constant(size2))),
          ([size1, size2]) => {
            const proof = consistencyProof(size1, size2, uniform);
            verifyConsistency(size1, size2, proof, rootFromNodes(size1, uniform), rootFromNodes(size2, uniform));
          },
        ),
      );
    });
  });
});
