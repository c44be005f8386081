// Shows that each check of validate.mjs fails when it should: every test breaks one thing in a
// rendered overlay (or in a scratch kustomization) and expects the matching error.
//   node --test validate.test.mjs
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import {
  adapterMetricNames, applyJsonPatch, crossCheck, kubeDir, monitoringDir, readYamlDocs, render,
  schemaErrors, strip,
} from "./validate.mjs";

// The flags of `jetserve serve --help` that the manifests use; the real list is read from the
// binary by validate.mjs, these tests only need a fixed one.
const FLAGS = new Set(["model", "served-model-name", "host", "port", "metrics-port", "memory-gb",
                       "max-seqs", "max-batch-tokens", "max-queue", "shutdown-timeout",
                       "log-format"]);
const context = {
  alertGroups: readYamlDocs(path.join(monitoringDir, "jetserve-alerts.yaml"))[0].groups,
  adapterRules: readYamlDocs(path.join(monitoringDir, "prometheus-adapter-rules.yaml"))[0],
};

function production() {
  return render(path.join(kubeDir, "overlays/production"));
}
const find = (objects, kind) => objects.find((o) => o.kind === kind);
const server = (objects) => find(objects, "Deployment").spec.template.spec.containers[0];

function expectError(objects, pattern) {
  const errors = crossCheck(objects, FLAGS, context);
  assert.ok(errors.some((e) => pattern.test(e)),
            `expected an error matching ${pattern}, got ${JSON.stringify(errors)}`);
}

test("the production overlay passes as it is", () => {
  assert.deepEqual(crossCheck(production(), FLAGS, context), []);
});

test("a flag the server does not have", () => {
  const o = production();
  server(o).args.push("--max-sequences=4");
  expectError(o, /--max-sequences: not a flag/);
});

test("probe on the wrong port, or not gRPC", () => {
  let o = production();
  server(o).readinessProbe.grpc.port = 8000;
  expectError(o, /readinessProbe: port 8000 is not the grpc port/);
  o = production();
  server(o).livenessProbe = { httpGet: { path: "/", port: 8000 } };
  expectError(o, /livenessProbe: missing or not a gRPC probe/);
});

test("--port and the container port disagree", () => {
  const o = production();
  server(o).args = server(o).args.map((a) => (a === "--port=50051" ? "--port=50052" : a));
  expectError(o, /--port=50052 but container port 'grpc' is 50051/);
});

test("grace period shorter than preStop + --shutdown-timeout", () => {
  const o = production();
  find(o, "Deployment").spec.template.spec.terminationGracePeriodSeconds = 35;
  expectError(o, /terminationGracePeriodSeconds 35 <= preStop 5 s \+ --shutdown-timeout 30 s/);
});

test("liveness probe that would kill a draining pod", () => {
  const o = production();
  server(o).livenessProbe.failureThreshold = 3;
  expectError(o, /livenessProbe: would fail during a drain/);
});

test("security context relaxed", () => {
  let o = production();
  delete find(o, "Deployment").spec.template.spec.securityContext.runAsNonRoot;
  expectError(o, /runAsNonRoot is not true/);
  o = production();
  find(o, "Deployment").spec.template.spec.initContainers[0].securityContext
      .readOnlyRootFilesystem = false;
  expectError(o, /container fetch-model: readOnlyRootFilesystem is not true/);
});

test("memory limit below --memory-gb", () => {
  const o = production();
  server(o).resources.limits.memory = "8Gi";
  expectError(o, /memory limit 8Gi leaves less than 1 GiB above --memory-gb=8/);
});

test("init container fills another directory than --model", () => {
  const o = production();
  const init = find(o, "Deployment").spec.template.spec.initContainers[0];
  init.env.find((e) => e.name === "MODEL_DIR").value = "/models/other";
  expectError(o, /fetch-model writes \/models\/other but --model=/);
});

test("Service targets a port the container does not have", () => {
  const o = production();
  find(o, "Service").spec.ports[1].targetPort = "prometheus";
  expectError(o, /Service jetserve: port metrics targets prometheus/);
});

test("ServiceMonitor scrapes a port the Service does not have", () => {
  const o = production();
  find(o, "ServiceMonitor").spec.endpoints[0].port = "http-metrics";
  expectError(o, /ServiceMonitor jetserve: Service has no port http-metrics/);
});

test("PrometheusRule drifts from the rule file", () => {
  const o = production();
  find(o, "PrometheusRule").spec.groups[0].rules[0].for = "1m";
  expectError(o, /groups differ from deploy\/monitoring\/jetserve-alerts.yaml/);
});

test("autoscaler on a metric the adapter does not publish", () => {
  const o = production();
  find(o, "HorizontalPodAutoscaler").spec.metrics[0].pods.metric.name = "jetserve_queue";
  expectError(o, /metric jetserve_queue is not published/);
  assert.deepEqual([...adapterMetricNames(context.adapterRules)],
                   ["jetserve_num_requests_waiting"]);
});

test("selectors that miss the pods", () => {
  for (const kind of ["PodDisruptionBudget", "NetworkPolicy"]) {
    const o = production();
    const obj = find(o, kind);
    (obj.spec.selector ?? obj.spec.podSelector).matchLabels["app.kubernetes.io/name"] = "x";
    expectError(o, new RegExp(`${kind} jetserve: .*does not match the pods`));
  }
});

test("schemas: wrong types and unknown fields are errors", async () => {
  const dep = strip(find(production(), "Deployment"));
  assert.deepEqual(await schemaErrors(dep), []);
  const typo = structuredClone(dep);
  typo.spec.template.spec.containers[0].livenesProbe = typo.spec.template.spec.containers[0]
      .livenessProbe;
  assert.match((await schemaErrors(typo)).join(), /containers\/0\/livenesProbe: unknown field/);
  const wrongType = structuredClone(dep);
  wrongType.spec.replicas = "two";
  assert.match((await schemaErrors(wrongType)).join(), /replicas must be integer/);
  const sm = strip(find(production(), "ServiceMonitor"));
  sm.spec.endpoints[0].intervall = "15s";
  assert.match((await schemaErrors(sm)).join(), /endpoints\/0\/intervall: unknown field/);
  const pool = readYamlDocs(path.join(kubeDir, "components/inference-pool/inferencepool.yaml"))[0];
  assert.deepEqual(await schemaErrors(pool), []);
  pool.spec.targetPortNumber = 8080;  // the v1alpha2 field name
  assert.match((await schemaErrors(pool)).join(), /spec\/targetPortNumber: unknown field/);
});

test("JSON patch: add, append, escaped keys, remove, missing parents", () => {
  const doc = { a: { list: [1, 2] }, limits: {} };
  applyJsonPatch(doc, [
    { op: "add", path: "/a/list/-", value: 3 },
    { op: "add", path: "/a/list/0", value: 0 },
    { op: "add", path: "/limits/nvidia.com~1gpu", value: "1" },
    { op: "remove", path: "/a/list/1" },
    { op: "replace", path: "/a/list/0", value: 9 },
  ], "test");
  assert.deepEqual(doc, { a: { list: [9, 2, 3] }, limits: { "nvidia.com/gpu": "1" } });
  assert.throws(() => applyJsonPatch(doc, [{ op: "remove", path: "/nope" }], "t"),
                /no such member/);
  assert.throws(() => applyJsonPatch(doc, [{ op: "add", path: "/x/y", value: 1 }], "t"),
                /parent does not exist/);
});

test("kustomize subset: unsupported fields and unmatched patches are errors", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "jetserve-kustomize-"));
  try {
    fs.writeFileSync(path.join(dir, "cm.yaml"),
                     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n");
    fs.writeFileSync(path.join(dir, "kustomization.yaml"),
                     "kind: Kustomization\nresources: [cm.yaml]\nnamePrefix: x-\n");
    assert.throws(() => render(dir), /field 'namePrefix' is not supported/);
    fs.writeFileSync(path.join(dir, "p.yaml"), "- op: remove\n  path: /data\n");
    fs.writeFileSync(path.join(dir, "kustomization.yaml"),
                     "kind: Kustomization\nresources: [cm.yaml]\n" +
                     "patches: [{path: p.yaml, target: {kind: Secret, name: c}}]\n");
    assert.throws(() => render(dir), /patch p.yaml matches nothing/);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});
