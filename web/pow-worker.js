// rushgate proof-of-work solver, run as a Web Worker by the waiting page. Given
// { challenge, difficulty }, it tries nonces 0, 1, 2, ... until SHA-256(challenge ":" nonce)
// starts with `difficulty` zero bits, reporting { tried } now and then and { nonce, tried } at
// the end. Hashes with WebCrypto (crypto.subtle.digest, in batches so the promises overlap);
// where WebCrypto is missing (a page served over plain http on a real host name is not a
// secure context) it falls back to the small SHA-256 below, which gives the same hashes.
"use strict";

var K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
]);
var W = new Uint32Array(64);

// SHA-256 of `bytes` (FIPS 180-4), for browsers without WebCrypto.
function sha256(bytes) {
  var len = bytes.length, n = ((len + 9 + 63) >> 6) << 6;
  var m = new Uint8Array(n);
  m.set(bytes);
  m[len] = 0x80;
  var dv = new DataView(m.buffer);
  dv.setUint32(n - 8, Math.floor(len / 0x20000000));
  dv.setUint32(n - 4, (len << 3) >>> 0);
  var h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  for (var off = 0; off < n; off += 64) {
    var i;
    for (i = 0; i < 16; i++) W[i] = dv.getUint32(off + i * 4);
    for (i = 16; i < 64; i++) {
      var x = W[i - 15], y = W[i - 2];
      var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
    }
    var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (i = 0; i < 64; i++) {
      var t1 = (k + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
                ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
      var t2 = ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
                ((a & b) ^ (a & c) ^ (b & c))) | 0;
      k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
    h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + k) | 0;
  }
  var out = new Uint8Array(32), odv = new DataView(out.buffer);
  for (var j = 0; j < 8; j++) odv.setUint32(j * 4, h[j] >>> 0);
  return out;
}

// Leading zero bits of a hash.
function zeros(hash) {
  var n = 0;
  for (var i = 0; i < hash.length; i++) {
    if (hash[i] !== 0) return n + Math.clz32(hash[i]) - 24;
    n += 8;
  }
  return n;
}

var BATCH = 256;          // hashes in flight at once (WebCrypto answers with promises)
var REPORT_EVERY = 4096;  // hashes between progress messages

async function search(challenge, difficulty) {
  var subtle = self.crypto && self.crypto.subtle;
  var enc = new TextEncoder();
  var prefix = challenge + ":";
  var reported = 0;
  for (var start = 0; ; start += BATCH) {
    var hashes = [];
    for (var i = 0; i < BATCH; i++) {
      var input = enc.encode(prefix + (start + i));
      hashes.push(subtle ? subtle.digest("SHA-256", input) : sha256(input));
    }
    if (subtle) hashes = await Promise.all(hashes);
    for (i = 0; i < BATCH; i++) {
      if (zeros(new Uint8Array(hashes[i])) >= difficulty) {
        return { nonce: String(start + i), tried: start + i + 1 };
      }
    }
    if (start + BATCH - reported >= REPORT_EVERY) {
      reported = start + BATCH;
      self.postMessage({ tried: reported });
    }
  }
}

self.onmessage = function (e) {
  var job = e.data || {};
  search(String(job.challenge), Number(job.difficulty) || 1).then(
    function (found) { self.postMessage(found); },
    function (err) { self.postMessage({ error: String(err) }); }
  );
};
