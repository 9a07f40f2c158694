import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A throwaway CA and one server certificate it signed, made with the openssl CLI (node:crypto cannot sign X.509). */
export interface TestCa {
  /** The CA certificate (PEM): what a client trusts. */
  ca: string;
  /** The server's private key and certificate chain (leaf, then CA), PEM. */
  key: string;
  cert: string;
  /**
   * base64 SHA-256 of the leaf's SubjectPublicKeyInfo: Chromium's `--ignore-certificate-errors-spki-list` takes it and
   * then accepts this certificate only, every other certificate error still fails.
   */
  spki: string;
}

/** Makes a CA and a certificate for `names` (DNS names or IP addresses), valid for one day. Throws when openssl is missing. */
export function makeTestCa(names: string[]): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-ca-'));
  const file = (name: string) => join(dir, name);
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    run('req', '-x509', ...ec, '-days', '1', '-subj', '/CN=oidc-ext-authz test CA', '-keyout', file('ca.key'), '-out', file('ca.pem'),
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
    run('req', ...ec, '-subj', `/CN=${names[0] ?? 'localhost'}`, '-keyout', file('leaf.key'), '-out', file('leaf.csr'));
    const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
    writeFileSync(file('leaf.ext'), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
    run('x509', '-req', '-in', file('leaf.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '1',
      '-extfile', file('leaf.ext'), '-out', file('leaf.pem'));
    const ca = readFileSync(file('ca.pem'), 'utf8');
    const leaf = readFileSync(file('leaf.pem'), 'utf8');
    const der = new X509Certificate(leaf).publicKey.export({ type: 'spki', format: 'der' });
    return { ca, key: readFileSync(file('leaf.key'), 'utf8'), cert: leaf + ca, spki: createHash('sha256').update(der).digest('base64') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
