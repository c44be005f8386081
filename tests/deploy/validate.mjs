// Offline validation of deploy/kubernetes: renders every overlay the way `kubectl apply -k`
// would (for the kustomize features used there), validates each object against the Kubernetes
// and Prometheus Operator schemas of the kubernetes-models packages (rejecting unknown fields,
// which those schemas alone let through), and checks that the manifests agree with the server
// and with one another: flags `jetserve serve --help` prints, probe and Service ports, drain
// timing, security context, resources, selectors, the autoscaler's metric.
//
//   node validate.mjs --jetserve BUILD/jetserve
//
// kubectl is not a Debian 12 package (Debian's kubernetes-client is 1.20, whose kustomize
// predates components), so the kustomize subset is implemented here; any kustomization field
// outside it is an error, so that nothing goes unrendered silently.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";

import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../..");
export const kubeDir = path.join(repoRoot, "deploy/kubernetes");
export const monitoringDir = path.join(repoRoot, "deploy/monitoring");

// Flags the manifests may use before the server has them (allowed only in the given
// component's files, and only while `--help` lacks them). None at present.
export const PENDING_FLAGS = new Map([]);

// ---- YAML and kustomize --------------------------------------------------------------------

export function readYamlDocs(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  return docs.map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
    return d.toJS();
  }).filter((d) => d !== null);
}

const KUSTOMIZATION_FIELDS = new Set([
  "apiVersion", "kind", "resources", "components", "patches", "images", "namespace",
]);
// Kinds without a namespace among those a jetserve deployment could plausibly include.
const CLUSTER_SCOPED = new Set([
  "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
  "PriorityClass", "StorageClass", "PersistentVolume", "RuntimeClass",
]);

function readKustomization(dir, expectedKind) {
  const file = path.join(dir, "kustomization.yaml");
  if (!fs.existsSync(file)) throw new Error(`${dir}: no kustomization.yaml`);
  const [k] = readYamlDocs(file);
  if (k.kind !== expectedKind) {
    throw new Error(`${file}: kind ${k.kind}, expected ${expectedKind}`);
  }
  for (const key of Object.keys(k)) {
    if (!KUSTOMIZATION_FIELDS.has(key)) {
      throw new Error(`${file}: field '${key}' is not supported by this validator`);
    }
  }
  return { file, k };
}

// JSON pointer (RFC 6901) segments.
function pointer(p) {
  if (!p.startsWith("/")) throw new Error(`JSON pointer '${p}' does not start with /`);
  return p.slice(1).split("/").map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
}

// RFC 6902 operations add, remove, replace, test: the ones kustomize's JSON patches use.
export function applyJsonPatch(doc, ops, where) {
  for (const op of ops) {
    const segs = pointer(op.path);
    const last = segs.pop();
    let parent = doc;
    for (const s of segs) {
      const next = Array.isArray(parent) ? parent[Number(s)] : parent?.[s];
      if (next === undefined || next === null || typeof next !== "object") {
        throw new Error(`${where}: ${op.op} ${op.path}: parent does not exist`);
      }
      parent = next;
    }
    const isArray = Array.isArray(parent);
    const index = isArray ? (last === "-" ? parent.length : Number(last)) : last;
    const exists = isArray ? index < parent.length : Object.hasOwn(parent, index);
    switch (op.op) {
      case "add":
        if (isArray) parent.splice(index, 0, structuredClone(op.value));
        else parent[index] = structuredClone(op.value);
        break;
      case "remove":
      case "replace":
        if (!exists) throw new Error(`${where}: ${op.op} ${op.path}: no such member`);
        if (op.op === "remove") {
          if (isArray) parent.splice(index, 1);
          else delete parent[index];
        } else {
          parent[index] = structuredClone(op.value);
        }
        break;
      case "test":
        if (!exists || !isDeepStrictEqual(parent[index], op.value)) {
          throw new Error(`${where}: test ${op.path} failed`);
        }
        break;
      default:
        throw new Error(`${where}: unsupported patch op '${op.op}'`);
    }
  }
}

function podSpecs(obj) {
  if (obj.kind === "Pod") return [obj.spec];
  const t = obj.spec?.template?.spec;
  return t ? [t] : [];
}

function splitImage(image) {
  const base = image.split("@")[0];
  const colon = base.lastIndexOf(":");
  return colon > base.lastIndexOf("/") ? { name: base.slice(0, colon), tag: base.slice(colon + 1) }
                                       : { name: base, tag: undefined };
}

function applyImages(objects, images, where) {
  for (const img of images) {
    let used = false;
    for (const obj of objects) {
      for (const spec of podSpecs(obj)) {
        for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
          const { name, tag } = splitImage(c.image);
          if (name !== img.name) continue;
          const newTag = img.newTag ?? tag;
          c.image = `${img.newName ?? name}${newTag ? `:${newTag}` : ""}`;
          used = true;
        }
      }
    }
    if (!used) throw new Error(`${where}: images: no container uses image '${img.name}'`);
  }
}

// Renders the Kustomization (or Component) in `dir`. `seen` collects every file read, for the
// check that no manifest is left out of all overlays.
export function render(dir, seen = new Set(), expectedKind = "Kustomization") {
  const { file, k } = readKustomization(dir, expectedKind);
  seen.add(file);
  let objects = [];
  for (const r of k.resources ?? []) {
    const p = path.resolve(dir, r);
    if (fs.statSync(p).isDirectory()) {
      objects.push(...render(p, seen));
    } else {
      seen.add(p);
      objects.push(...readYamlDocs(p).map((o) => ({ ...o, __source: p })));
    }
  }
  // A component transforms everything accumulated so far, as kustomize does.
  for (const c of k.components ?? []) {
    const cdir = path.resolve(dir, c);
    objects = renderComponent(cdir, objects, seen);
  }
  transform(dir, file, k, objects, seen);
  const ids = new Set();
  for (const o of objects) {
    const id = `${o.apiVersion}/${o.kind}/${o.metadata?.name}`;
    if (ids.has(id)) throw new Error(`${file}: ${id} defined twice`);
    ids.add(id);
  }
  return objects;
}

function renderComponent(dir, objects, seen) {
  const { file, k } = readKustomization(dir, "Component");
  seen.add(file);
  const out = objects.slice();
  for (const r of k.resources ?? []) {
    const p = path.resolve(dir, r);
    seen.add(p);
    out.push(...readYamlDocs(p).map((o) => ({ ...o, __source: p })));
  }
  if (k.components) throw new Error(`${file}: nested components are not supported`);
  transform(dir, file, k, out, seen);
  return out;
}

function transform(dir, file, k, objects, seen) {
  for (const patch of k.patches ?? []) {
    if (!patch.path || !patch.target?.kind || !patch.target?.name) {
      throw new Error(`${file}: each patch needs path and target.kind/name`);
    }
    const p = path.resolve(dir, patch.path);
    seen.add(p);
    const ops = YAML.parse(fs.readFileSync(p, "utf8"));
    if (!Array.isArray(ops)) throw new Error(`${p}: not a JSON patch (a list of operations)`);
    const targets = objects.filter((o) => o.kind === patch.target.kind &&
                                          o.metadata?.name === patch.target.name);
    if (targets.length === 0) throw new Error(`${file}: patch ${patch.path} matches nothing`);
    for (const t of targets) {
      applyJsonPatch(t, ops, p);
      (t.__patchedBy ??= []).push(p);
    }
  }
  if (k.images) applyImages(objects, k.images, file);
  if (k.namespace) {
    for (const o of objects) {
      if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
    }
  }
}

export function strip(o) {
  const { __source, __patchedBy, ...rest } = o;
  return rest;
}

// ---- schemas ---------------------------------------------------------------------------------

const MODULES = {
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

async function modelClass(apiVersion, kind) {
  const mod = MODULES[apiVersion] ?? `kubernetes-models/${apiVersion}`;
  let m;
  try {
    m = await import(mod);
  } catch (e) {
    return null;
  }
  return m[kind] ?? null;
}

// Runs a model's compiled validator on a proxy that records which members it reads: a member it
// never reads, in an object whose members it never enumerates (a map such as labels), is not in
// the schema. That is the typo check (`livenesProbe`) the validator itself does not make.
function validateStrict(Cls, obj) {
  const read = new WeakMap();
  const enumerated = new WeakSet();
  const proxies = new WeakMap();
  const wrap = (o) => {
    if (o === null || typeof o !== "object") return o;
    if (proxies.has(o)) return proxies.get(o);
    const p = new Proxy(o, {
      get(t, key, receiver) {
        if (typeof key === "string") {
          if (!read.has(t)) read.set(t, new Set());
          read.get(t).add(key);
        }
        return wrap(Reflect.get(t, key, receiver));
      },
      ownKeys(t) {
        enumerated.add(t);
        return Reflect.ownKeys(t);
      },
    });
    proxies.set(o, p);
    return p;
  };
  const errors = [];
  try {
    Cls.prototype.validate.call(wrap(obj));
  } catch (e) {
    errors.push(e.message.split("\n").slice(0, 6).join("; "));
    return errors;  // unknown-field detection needs a validator that ran to the end
  }
  const walk = (x, p) => {
    if (x === null || typeof x !== "object") return;
    if (!Array.isArray(x) && !enumerated.has(x)) {
      for (const key of Object.keys(x)) {
        if (!read.get(x)?.has(key)) errors.push(`${p}/${key}: unknown field`);
      }
    }
    for (const [key, v] of Object.entries(x)) walk(v, `${p}/${key}`);
  };
  walk(obj, "");
  return errors;
}

// The InferencePool CRD has no schema package on npm: a focused check of the v1 fields.
function validateInferencePool(o) {
  const errors = [];
  const s = o.spec ?? {};
  const allowed = new Set(["selector", "targetPorts", "appProtocol", "endpointPickerRef"]);
  for (const k of Object.keys(s)) if (!allowed.has(k)) errors.push(`/spec/${k}: unknown field`);
  if (!s.selector?.matchLabels || Object.keys(s.selector).some((k) => k !== "matchLabels")) {
    errors.push("/spec/selector: needs matchLabels (and nothing else)");
  }
  if (!Array.isArray(s.targetPorts) || s.targetPorts.length < 1 || s.targetPorts.length > 8 ||
      s.targetPorts.some((p) => !Number.isInteger(p.number) || p.number < 1 || p.number > 65535 ||
                                Object.keys(p).some((k) => k !== "number"))) {
    errors.push("/spec/targetPorts: 1 to 8 entries of {number: 1..65535}");
  }
  if (s.appProtocol !== undefined && !["http", "kubernetes.io/h2c"].includes(s.appProtocol)) {
    errors.push("/spec/appProtocol: http or kubernetes.io/h2c");
  }
  const epp = s.endpointPickerRef;
  if (!epp?.name) errors.push("/spec/endpointPickerRef/name: required");
  for (const k of Object.keys(epp ?? {})) {
    if (!["group", "kind", "name", "port", "failureMode"].includes(k)) {
      errors.push(`/spec/endpointPickerRef/${k}: unknown field`);
    }
  }
  if (epp?.failureMode !== undefined && !["FailOpen", "FailClose"].includes(epp.failureMode)) {
    errors.push("/spec/endpointPickerRef/failureMode: FailOpen or FailClose");
  }
  if ((epp?.kind ?? "Service") === "Service" && !Number.isInteger(epp?.port?.number)) {
    errors.push("/spec/endpointPickerRef/port/number: required for a Service");
  }
  return errors;
}

export async function schemaErrors(obj) {
  if (!obj.metadata?.name) return ["metadata.name: required"];
  if (obj.apiVersion === "inference.networking.k8s.io/v1" && obj.kind === "InferencePool") {
    return validateInferencePool(obj);
  }
  const Cls = await modelClass(obj.apiVersion, obj.kind);
  if (!Cls) return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  return validateStrict(Cls, obj);
}

// ---- cross-checks --------------------------------------------------------------------------

export function helpFlags(jetserveBin) {
  const help = execFileSync(jetserveBin, ["serve", "--help"], { encoding: "utf8" });
  const flags = new Set([...help.matchAll(/^\s+--([a-z0-9][a-z0-9-]*)/gm)].map((m) => m[1]));
  if (flags.size < 10) throw new Error(`only ${flags.size} flags in \`serve --help\`:\n${help}`);
  return flags;
}

function quantityBytes(q) {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  if (!m) throw new Error(`memory quantity '${q}' not understood`);
  const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9,
                 T: 1e12 }[m[2]] ?? 1;
  return Number(m[1]) * mult;
}

function matches(selector, labels) {
  return Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
}

function serverArgs(container, errors) {
  const args = new Map();
  for (const a of container.args ?? []) {
    const m = /^--([a-z0-9-]+)=(.*)$/.exec(a);
    if (!m) {
      errors.push(`container ${container.name}: argument '${a}' is not --flag=value`);
      continue;
    }
    if (args.has(m[1])) errors.push(`container ${container.name}: --${m[1]} given twice`);
    args.set(m[1], m[2]);
  }
  return args;
}

// Every check that relates objects of one rendered overlay to each other and to the server.
// `flags` is the set `jetserve serve --help` prints. Returns a list of errors.
export function crossCheck(objects, flags, { alertGroups, adapterRules } = {}) {
  const errors = [];
  const of = (kind) => objects.filter((o) => o.kind === kind);
  const deployments = of("Deployment");
  if (deployments.length !== 1) return [`expected one Deployment, got ${deployments.length}`];
  const dep = deployments[0];
  const pod = dep.spec.template.spec;
  const podLabels = dep.spec.template.metadata?.labels ?? {};
  if (!matches(dep.spec.selector?.matchLabels, podLabels)) {
    errors.push("Deployment: selector does not match its pod template's labels");
  }
  const server = pod.containers.find((c) => c.name === "jetserve");
  if (!server) return [...errors, "Deployment: no container named jetserve"];

  // Flags exist in this build of the server.
  const args = serverArgs(server, errors);
  for (const name of args.keys()) {
    if (flags.has(name)) continue;
    const pendingIn = PENDING_FLAGS.get(name);
    const fromPending = pendingIn &&
        (dep.__patchedBy ?? []).some((p) => p.includes(`${path.sep}${pendingIn}`));
    if (!fromPending) errors.push(`--${name}: not a flag of \`jetserve serve\``);
  }
  const int = (name) => (args.has(name) ? Number(args.get(name)) : undefined);
  if (!["0.0.0.0", "::"].includes(args.get("host"))) {
    errors.push("--host must be 0.0.0.0 or :: (probes and the Service reach the pod IP)");
  }

  // Ports: flags, container ports, probes.
  const ports = new Map((server.ports ?? []).map((p) => [p.name, p.containerPort]));
  for (const [flag, name] of [["port", "grpc"], ["metrics-port", "metrics"],
                              ["http-port", "http"]]) {
    if (!args.has(flag) && !ports.has(name)) continue;
    if (int(flag) !== ports.get(name)) {
      errors.push(`--${flag}=${args.get(flag)} but container port '${name}' is ` +
                  `${ports.get(name)}`);
    }
  }
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const p = server[probe];
    if (!p?.grpc) {
      errors.push(`${probe}: missing or not a gRPC probe`);
      continue;
    }
    if (p.grpc.port !== ports.get("grpc")) {
      errors.push(`${probe}: port ${p.grpc.port} is not the grpc port ${ports.get("grpc")}`);
    }
    if (![undefined, "", "jetserve.v1.JetServe"].includes(p.grpc.service)) {
      errors.push(`${probe}: health service '${p.grpc.service}' is NOT_FOUND on jetserve`);
    }
  }
  const sp = server.startupProbe;
  if (sp && (sp.failureThreshold ?? 3) * (sp.periodSeconds ?? 10) < 300) {
    errors.push("startupProbe: allows less than 5 minutes for the model to load");
  }

  // Drain timing: preStop sleep + --shutdown-timeout must fit in the grace period, and the
  // liveness probe must not restart a draining pod (health is NOT_SERVING while it drains).
  const shutdown = int("shutdown-timeout") ?? 30;
  const pre = server.lifecycle?.preStop;
  const preStop = pre?.sleep?.seconds ??
      (pre?.exec?.command?.[0] === "sleep" ? Number(pre.exec.command[1]) : 0);
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  if (grace <= shutdown + preStop) {
    errors.push(`terminationGracePeriodSeconds ${grace} <= preStop ${preStop} s + ` +
                `--shutdown-timeout ${shutdown} s`);
  }
  const lp = server.livenessProbe;
  if (lp && (lp.failureThreshold ?? 3) * (lp.periodSeconds ?? 10) <= shutdown + preStop) {
    errors.push("livenessProbe: would fail during a drain and restart the pod");
  }

  // Restricted security context, for every container.
  const psc = pod.securityContext ?? {};
  if (psc.runAsNonRoot !== true) errors.push("pod securityContext: runAsNonRoot is not true");
  if (!psc.runAsUser || psc.runAsUser === 0) errors.push("pod securityContext: runAsUser");
  if (psc.seccompProfile?.type !== "RuntimeDefault") {
    errors.push("pod securityContext: seccompProfile is not RuntimeDefault");
  }
  const all = [...(pod.initContainers ?? []), ...pod.containers];
  for (const c of all) {
    const sc = c.securityContext ?? {};
    if (sc.allowPrivilegeEscalation !== false) {
      errors.push(`container ${c.name}: allowPrivilegeEscalation is not false`);
    }
    if (sc.readOnlyRootFilesystem !== true) {
      errors.push(`container ${c.name}: readOnlyRootFilesystem is not true`);
    }
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) {
      errors.push(`container ${c.name}: capabilities do not drop ALL`);
    }
    if (sc.privileged || sc.runAsUser === 0) errors.push(`container ${c.name}: privileged/root`);
    for (const kind of ["requests", "limits"]) {
      for (const r of ["cpu", "memory"]) {
        if (c.resources?.[kind]?.[r] === undefined) {
          errors.push(`container ${c.name}: no ${kind}.${r}`);
        }
      }
    }
  }
  // A GPU the server does not use, or a CUDA server without one.
  const gpus = server.resources?.limits?.["nvidia.com/gpu"];
  const device = args.get("device") ?? "cpu";
  if (gpus !== undefined && device !== "cuda") {
    errors.push(`limits nvidia.com/gpu: ${gpus} but --device=${device}: the GPU would sit idle`);
  }
  if (device === "cuda" && gpus === undefined) {
    errors.push("--device=cuda without an nvidia.com/gpu limit: no GPU is scheduled");
  }
  const memGb = Number(args.get("memory-gb") ?? 1);
  const limit = server.resources?.limits?.memory;
  if (limit !== undefined && quantityBytes(limit) < (memGb + 1) * 2 ** 30) {
    errors.push(`memory limit ${limit} leaves less than 1 GiB above --memory-gb=${memGb}`);
  }

  // The model: the init container fills the directory --model reads, from a volume that exists.
  const fetch = (pod.initContainers ?? []).find((c) => c.name === "fetch-model");
  if (fetch) {
    const env = new Map((fetch.env ?? []).map((e) => [e.name, e.value]));
    if (env.get("MODEL_DIR") !== args.get("model")) {
      errors.push(`fetch-model writes ${env.get("MODEL_DIR")} but --model=${args.get("model")}`);
    }
  }
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  for (const c of all) {
    for (const m of c.volumeMounts ?? []) {
      if (!volumes.has(m.name)) errors.push(`container ${c.name}: volume ${m.name} not defined`);
    }
  }
  for (const v of volumes.values()) {
    const claim = v.persistentVolumeClaim?.claimName;
    if (claim && !of("PersistentVolumeClaim").some((p) => p.metadata.name === claim)) {
      errors.push(`volume ${v.name}: PersistentVolumeClaim ${claim} is not in the manifests`);
    }
  }
  const sa = pod.serviceAccountName;
  if (sa && !of("ServiceAccount").some((s) => s.metadata.name === sa)) {
    errors.push(`serviceAccountName ${sa}: no such ServiceAccount`);
  }

  // Services: select the pods, target named container ports, gRPC as h2c.
  const services = of("Service");
  if (services.length === 0) errors.push("no Service");
  for (const svc of services) {
    if (!matches(svc.spec.selector, podLabels)) {
      errors.push(`Service ${svc.metadata.name}: selector does not match the pods`);
    }
    for (const p of svc.spec.ports ?? []) {
      const target = p.targetPort ?? p.port;
      const ok = typeof target === "string" ? ports.has(target)
                                            : [...ports.values()].includes(target);
      if (!ok) errors.push(`Service ${svc.metadata.name}: port ${p.name} targets ${target}`);
      if (target === "grpc" && p.appProtocol !== "kubernetes.io/h2c") {
        errors.push(`Service ${svc.metadata.name}: grpc port without appProtocol h2c`);
      }
    }
  }
  for (const pdb of of("PodDisruptionBudget")) {
    if (!matches(pdb.spec.selector?.matchLabels, podLabels)) {
      errors.push(`PodDisruptionBudget ${pdb.metadata.name}: selector does not match the pods`);
    }
  }
  for (const np of of("NetworkPolicy")) {
    if (!matches(np.spec.podSelector?.matchLabels, podLabels)) {
      errors.push(`NetworkPolicy ${np.metadata.name}: podSelector does not match the pods`);
    }
    const allowed = new Set((np.spec.ingress ?? []).flatMap((r) => r.ports ?? [])
        .map((p) => p.port));
    for (const [name, number] of ports) {
      if (!allowed.has(name) && !allowed.has(number)) {
        errors.push(`NetworkPolicy ${np.metadata.name}: container port ${name} not let in`);
      }
    }
    for (const p of allowed) {
      if (typeof p === "string" && !ports.has(p)) {
        errors.push(`NetworkPolicy ${np.metadata.name}: port ${p} is not a container port`);
      }
    }
  }
  for (const sm of of("ServiceMonitor")) {
    const svc = services.filter((s) => matches(sm.spec.selector?.matchLabels,
                                               s.metadata.labels));
    if (svc.length !== 1) {
      errors.push(`ServiceMonitor ${sm.metadata.name}: selects ${svc.length} Services, not 1`);
      continue;
    }
    for (const ep of sm.spec.endpoints ?? []) {
      if (!(svc[0].spec.ports ?? []).some((p) => p.name === ep.port)) {
        errors.push(`ServiceMonitor ${sm.metadata.name}: Service has no port ${ep.port}`);
      }
      if ((ep.path ?? "/metrics") !== "/metrics") {
        errors.push(`ServiceMonitor ${sm.metadata.name}: path ${ep.path} is not /metrics`);
      }
    }
  }
  for (const rule of of("PrometheusRule")) {
    if (alertGroups && !isDeepStrictEqual(rule.spec.groups, alertGroups)) {
      errors.push(`PrometheusRule ${rule.metadata.name}: groups differ from ` +
                  "deploy/monitoring/jetserve-alerts.yaml");
    }
  }
  const hpas = of("HorizontalPodAutoscaler");
  for (const hpa of hpas) {
    const ref = hpa.spec.scaleTargetRef;
    if (ref.kind !== "Deployment" || ref.name !== dep.metadata.name) {
      errors.push(`HorizontalPodAutoscaler ${hpa.metadata.name}: does not scale the Deployment`);
    }
    if ((hpa.spec.minReplicas ?? 1) < 2) {
      errors.push(`HorizontalPodAutoscaler ${hpa.metadata.name}: minReplicas < 2 blocks ` +
                  "node drains under the PodDisruptionBudget");
    }
    const published = adapterMetricNames(adapterRules);
    for (const m of hpa.spec.metrics ?? []) {
      const name = m.pods?.metric?.name ?? m.object?.metric?.name ?? m.external?.metric?.name;
      if (m.type !== "Resource" && !published.has(name)) {
        errors.push(`HorizontalPodAutoscaler ${hpa.metadata.name}: metric ${name} is not ` +
                    `published by prometheus-adapter-rules.yaml (${[...published]})`);
      }
    }
  }
  if (hpas.length && dep.spec.replicas !== undefined) {
    errors.push("Deployment: spec.replicas is set although an autoscaler owns the count");
  }
  for (const ip of of("InferencePool")) {
    if (!matches(ip.spec.selector?.matchLabels, podLabels)) {
      errors.push(`InferencePool ${ip.metadata.name}: selector does not match the pods`);
    }
    for (const tp of ip.spec.targetPorts ?? []) {
      if (![...ports.values()].includes(tp.number)) {
        errors.push(`InferencePool ${ip.metadata.name}: port ${tp.number} is not a container ` +
                    "port");
      }
    }
  }
  return errors;
}

// The custom-metric names prometheus-adapter's rules publish: each rule's series renamed by its
// name.matches / name.as. (Go's ${1} becomes JavaScript's $1.)
export function adapterMetricNames(adapterRules) {
  const out = new Set();
  for (const r of adapterRules?.rules?.custom ?? []) {
    const series = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(r.seriesQuery)?.[1];
    if (!series) continue;
    const re = new RegExp(r.name?.matches ?? "^(.*)$");
    out.add(series.replace(re, (r.name?.as ?? "$1").replace(/\$\{(\d+)\}/g, "$$$1")));
  }
  return out;
}

// ---- the whole tree ------------------------------------------------------------------------

export function overlayDirs() {
  const root = path.join(kubeDir, "overlays");
  return fs.readdirSync(root).sort().map((d) => path.join(root, d))
      .filter((d) => fs.statSync(d).isDirectory());
}

function yamlFilesUnder(dir) {
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true })
      .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
      .map((e) => path.join(e.parentPath ?? e.path, e.name));
}

// Returns {failures, passed}: `passed` counts the checks (one per object's schema, one per
// overlay's cross-checks, one for coverage) that found nothing.
export async function validateAll(flags) {
  const failures = [];
  let passed = 0;
  const record = (errors, prefix) => {
    if (errors.length === 0) passed++;
    for (const e of errors) failures.push(`${prefix}: ${e}`);
  };
  const seen = new Set();
  const alertGroups = readYamlDocs(path.join(monitoringDir, "jetserve-alerts.yaml"))[0].groups;
  const adapterRules = readYamlDocs(path.join(monitoringDir, "prometheus-adapter-rules.yaml"))[0];
  for (const dir of overlayDirs()) {
    const name = path.relative(kubeDir, dir);
    let objects;
    try {
      objects = render(dir, seen);
    } catch (e) {
      record([e.message], name);
      continue;
    }
    for (const o of objects) {
      record(await schemaErrors(strip(o)),
             `${name}: ${o.kind} ${o.metadata?.name} (${path.relative(repoRoot, o.__source)})`);
    }
    record(crossCheck(objects, flags, { alertGroups, adapterRules }), name);
    console.log(`${name}: ${objects.length} objects: ` +
                objects.map((o) => `${o.kind}/${o.metadata.name}`).join(", "));
  }
  // Every manifest is part of some overlay.
  record(yamlFilesUnder(kubeDir).filter((f) => !seen.has(f))
             .map((f) => `${path.relative(repoRoot, f)}: not used by any overlay`),
         "coverage");
  return { failures, passed };
}

async function main() {
  const i = process.argv.indexOf("--jetserve");
  if (i < 0 || !process.argv[i + 1]) {
    console.error("usage: node validate.mjs --jetserve BUILD/jetserve");
    process.exit(2);
  }
  const flags = helpFlags(process.argv[i + 1]);
  for (const [flag, where] of PENDING_FLAGS) {
    if (!flags.has(flag)) {
      console.log(`note: --${flag} is not in this build's --help; allowed only from ${where}`);
    }
  }
  const { failures, passed } = await validateAll(flags);
  for (const f of failures) console.error(`FAIL ${f}`);
  console.log(`${passed} passed, ${failures.length} failed`);
  process.exit(failures.length ? 1 : 0);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
