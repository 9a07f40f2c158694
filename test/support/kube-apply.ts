import type { TestKubeApiServer } from './kube-apiserver.js';
import type { Obj } from './manifests.js';
import { setTimeout as sleep } from 'node:timers/promises';

interface Resource {
  /** `/api/v1` or `/apis/<group>/<version>` */
  base: string;
  plural: string;
  namespaced: boolean;
}

/**
 * Server-side apply against a real API server, with the server's own validation: `fieldValidation=Strict` (unknown
 * and duplicate fields are errors, which schema packages cannot see), admission, CRD schemas and CEL rules. Resource
 * names come from the server's discovery, so a kind the cluster does not serve fails loudly.
 */
export class KubeApplier {
  private readonly discovered = new Map<string, Map<string, Resource>>();

  constructor(private readonly kube: TestKubeApiServer) {}

  /** The URL path of `obj` (collection + name), found through discovery. */
  async path(obj: Obj, defaultNamespace: string): Promise<string> {
    const apiVersion = String(obj.apiVersion);
    let resources = this.discovered.get(apiVersion);
    if (resources?.has(obj.kind) !== true) {
      // Not cached, or a CRD installed since: ask again.
      resources = await this.discover(apiVersion);
      this.discovered.set(apiVersion, resources);
    }
    const r = resources.get(obj.kind);
    if (r === undefined) throw new Error(`the API server serves no ${obj.kind} in ${apiVersion}`);
    const ns = r.namespaced ? `/namespaces/${encodeURIComponent(obj.metadata?.namespace ?? defaultNamespace)}` : '';
    return `${r.base}${ns}/${r.plural}/${encodeURIComponent(obj.metadata.name)}`;
  }

  /**
   * Server-side apply of one object. `dryRun`: validated and admitted, never stored. Resolves to the error message
   * the server gave, or undefined when it accepted the object.
   */
  async apply(obj: Obj, options: { dryRun: boolean; defaultNamespace: string }): Promise<string | undefined> {
    const query = `?fieldManager=oidc-ext-authz-test&force=true&fieldValidation=Strict${options.dryRun ? '&dryRun=All' : ''}`;
    const path = await this.path(obj, options.defaultNamespace);
    const res = await this.kube.request('PATCH', `${path}${query}`, obj, { contentType: 'application/apply-patch+yaml' });
    if (res.status === 200 || res.status === 201) return undefined;
    return `${obj.kind} ${obj.metadata?.namespace ?? options.defaultNamespace}/${obj.metadata?.name}: HTTP ${res.status}: ${res.body?.message ?? JSON.stringify(res.body)}`;
  }

  /** Applies CRDs for real and waits until each one is Established and served. */
  async installCrds(objects: Obj[]): Promise<void> {
    for (const obj of objects) {
      const error = await this.apply(obj, { dryRun: false, defaultNamespace: 'default' });
      if (error) throw new Error(error);
    }
    const deadline = Date.now() + 60_000;
    for (const crd of objects.filter((o) => o.kind === 'CustomResourceDefinition')) {
      for (;;) {
        const res = await this.kube.request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`);
        const established = (res.body?.status?.conditions as Obj[] | undefined)?.some((c) => c.type === 'Established' && c.status === 'True');
        if (established) break;
        if (Date.now() > deadline) throw new Error(`CRD ${crd.metadata.name} not established: ${JSON.stringify(res.body?.status)}`);
        await sleep(100);
      }
    }
  }

  /** Creates a namespace for real (objects cannot be admitted, even in a dry run, into one that does not exist). */
  async ensureNamespace(name: string): Promise<void> {
    const error = await this.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }, { dryRun: false, defaultNamespace: 'default' });
    if (error) throw new Error(error);
  }

  private async discover(apiVersion: string): Promise<Map<string, Resource>> {
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    // A CRD's group appears in discovery a moment after it is Established.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const res = await this.kube.request('GET', base);
      if (res.status === 200) {
        const map = new Map<string, Resource>();
        for (const r of res.body.resources as { name: string; kind: string; namespaced: boolean }[]) {
          if (!r.name.includes('/')) map.set(r.kind, { base, plural: r.name, namespaced: r.namespaced });
        }
        return map;
      }
      if (res.status !== 404 || Date.now() > deadline) throw new Error(`discovery ${base}: HTTP ${res.status}`);
      await sleep(200);
    }
  }
}
