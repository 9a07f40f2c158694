/** Types of bench/memory-limits.mjs, for the tests that check the manifests agree (test/memory-limits.test.ts). */
export declare const BASE_DEPLOYMENT: string;
export declare const CHART_VALUES: string;
/** A Kubernetes memory quantity in MiB; throws on anything else. */
export declare function quantityMiB(q: string | number): number;
/** NODE_OPTIONS (split on spaces) and the memory limit of the base Deployment's container. */
export declare function baseMemorySettings(file?: string): { nodeOptions: string[]; limitMiB: number };
/** The chart's defaults: nodeMaxOldSpaceMiB and its memory limit. */
export declare function chartMemorySettings(file?: string): { nodeMaxOldSpaceMiB: number | null | undefined; limitMiB: number };
