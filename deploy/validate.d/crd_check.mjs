// Validates rendered custom resources (ServiceMonitor, HTTPRoute) against the schemas of
// their CRDs, as packaged by npm @kubernetes-models/*. kubernetes-validate knows only
// built-in kinds.
//
//   node crd_check.mjs NODE_MODULES_DIR FILE.json...
//
// The models check types, required fields, enums and patterns (for example a Prometheus
// duration); they do not reject unknown fields.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, ...files] = process.argv.slice(2);
if (!modules || files.length === 0) {
  console.error('usage: node crd_check.mjs NODE_MODULES_DIR FILE.json...');
  process.exit(64);
}

const models = {
  'monitoring.coreos.com/v1/ServiceMonitor': [
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js',
    'ServiceMonitor',
  ],
  'gateway.networking.k8s.io/v1/HTTPRoute': [
    '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute.js',
    'HTTPRoute',
  ],
};

let failed = false;
for (const file of files) {
  const object = JSON.parse(readFileSync(file, 'utf8'));
  const key = `${object.apiVersion}/${object.kind}`;
  const model = models[key];
  if (!model) {
    console.log(`  ${file}: no schema for ${key}`);
    failed = true;
    continue;
  }
  const module = await import(pathToFileURL(join(modules, model[0])).href);
  try {
    new module[model[1]](object).validate();
    console.log(`  ${file}: ${key} ok`);
  } catch (e) {
    console.log(`  ${file}: ${key} INVALID: ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
