import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import { loadPackageDefinition } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';

/** proto/ at the package root, both from src/ (tests) and dist/ (installed). */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

let definition: PackageDefinition | undefined;

/** The service protos, loaded once per process (reflection, health, test and benchmark clients). */
export function protoDefinition(): PackageDefinition {
  definition ??= loadSync(['envoy/service/auth/v3/external_auth.proto', 'grpc/health/v1/health.proto'], {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: Number,
    defaults: false,
    oneofs: true,
  });
  return definition;
}

/** The loaded package object (`grpc.health.v1.Health`, `envoy.service.auth.v3.Authorization`). */
export function loadProtos(): Record<string, unknown> {
  return loadPackageDefinition(protoDefinition()) as Record<string, unknown>;
}

/** grpc.reflection v1 and v1alpha, so grpcurl and ghz work without proto files. */
export function addReflection(server: grpc.Server): void {
  new ReflectionService(protoDefinition()).addToServer(server);
}
