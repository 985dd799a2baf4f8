package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
)

const chartDir = "helm/nkudo"

// helm returns the pinned helm that scripts/build-tool.sh built, skipping
// loudly when it has not been built unless NKUDO_HELM=require.
func helm(t *testing.T) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "../scripts/build-tool.sh", "helm", "--check").Output()
	if err != nil {
		if os.Getenv("NKUDO_HELM") == "require" {
			t.Fatalf("NKUDO_HELM=require but the pinned helm is not built (scripts/build-tool.sh helm): %v", err)
		}
		t.Skipf("SKIPPED: the pinned helm is not built, the Helm chart is NOT checked (scripts/build-tool.sh helm; NKUDO_HELM=require makes this a failure)")
	}
	return strings.TrimSpace(string(out))
}

func runHelm(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	// No user's helm configuration or repositories leak into the check.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor the
// chart renders; decoding strictly into it catches a misspelled field.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port      string `json:"port"`
			Path      string `json:"path"`
			Scheme    string `json:"scheme"`
			Interval  string `json:"interval"`
			TLSConfig struct {
				CA struct {
					Secret *corev1.SecretKeySelector `json:"secret"`
				} `json:"ca"`
				ServerName string `json:"serverName"`
			} `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// rendered is one `helm template` output, every object decoded strictly
// into its Kubernetes type.
type rendered struct {
	kinds          []string
	deployment     *appsv1.Deployment
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	networkPolicy  *networkingv1.NetworkPolicy
	pdb            *policyv1.PodDisruptionBudget
	serviceMonitor *serviceMonitor
}

// decodeStrict decodes one object's JSON into v, failing on unknown or
// duplicate fields and on fields spelled in another case (as the API server
// does with strict field validation).
func decodeStrict(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// render runs helm template and decodes its output.
func render(t *testing.T, bin string, args ...string) rendered {
	t.Helper()
	out, err := runHelm(t, bin, append([]string{"template", "nkudo", chartDir, "--namespace", "edge"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var r rendered
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template printed invalid YAML: %v\n%s", err, out)
		}
		if doc == nil {
			continue
		}
		data, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		kind, _ := doc["kind"].(string)
		apiVersion, _ := doc["apiVersion"].(string)
		meta, _ := doc["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		r.kinds = append(r.kinds, kind)
		var obj any
		switch apiVersion + " " + kind {
		case "apps/v1 Deployment":
			r.deployment = new(appsv1.Deployment)
			obj = r.deployment
		case "v1 Service":
			r.service = new(corev1.Service)
			obj = r.service
		case "v1 ServiceAccount":
			r.serviceAccount = new(corev1.ServiceAccount)
			obj = r.serviceAccount
		case "networking.k8s.io/v1 NetworkPolicy":
			r.networkPolicy = new(networkingv1.NetworkPolicy)
			obj = r.networkPolicy
		case "policy/v1 PodDisruptionBudget":
			r.pdb = new(policyv1.PodDisruptionBudget)
			obj = r.pdb
		case "monitoring.coreos.com/v1 ServiceMonitor":
			r.serviceMonitor = new(serviceMonitor)
			obj = r.serviceMonitor
		default:
			t.Fatalf("helm template rendered %s %s, which this test does not validate: add its type", apiVersion, kind)
		}
		if err := decodeStrict(data, obj); err != nil {
			t.Errorf("%s %s does not match its Kubernetes type: %v\n%s", kind, name, err, data)
		}
	}
	slices.Sort(r.kinds)
	return r
}

// TestDecodeStrictRefusesUnknownFields shows that the chart check catches a
// misspelled field and a field in the wrong case.
func TestDecodeStrictRefusesUnknownFields(t *testing.T) {
	for _, doc := range []string{
		`{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replica":2}}`,
		`{"apiVersion":"apps/v1","kind":"Deployment","spec":{"Replicas":2}}`,
		`{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":"two"}}`,
	} {
		if err := decodeStrict([]byte(doc), new(appsv1.Deployment)); err == nil {
			t.Errorf("decodeStrict(%s) = nil, want an error", doc)
		}
	}
	if err := decodeStrict([]byte(`{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":2}}`), new(appsv1.Deployment)); err != nil {
		t.Errorf("decodeStrict of a valid Deployment: %v", err)
	}
}

// TestHelmLint lints the chart with its defaults and with every optional part on.
func TestHelmLint(t *testing.T) {
	bin := helm(t)
	for _, args := range [][]string{nil, {"-f", "testdata/helm-values.yaml"}} {
		if out, err := runHelm(t, bin, append([]string{"lint", "--strict", chartDir}, args...)...); err != nil {
			t.Error(err)
		} else {
			t.Logf("%s", out)
		}
	}
}

// serveEnv is every environment variable `nkudo serve` reads, from the env
// tags of cmd/nkudo's flags.
func serveEnv(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../cmd/nkudo/*.go")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	tag := regexp.MustCompile(`env:"([A-Z0-9_,]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tag.FindAllSubmatch(src, -1) {
			for n := range strings.SplitSeq(string(m[1]), ",") {
				names[n] = true
			}
		}
	}
	if !names["DATABASE_URL"] || !names["CA_CERT_FILE"] {
		t.Fatalf("found no env tags of nkudo serve in cmd/nkudo (got %v)", names)
	}
	return names
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// checkPod asserts what every rendering must get right: probes, ports,
// non-root, env vars nkudo reads, and every configured file path backed by
// a mounted Secret key.
func checkPod(t *testing.T, r rendered, dbSecret, pkiSecret string) {
	t.Helper()
	d := r.deployment
	if d == nil {
		t.Fatal("no Deployment rendered")
	}
	pod := d.Spec.Template
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// The selector picks the pods, the Service and the NetworkPolicy pick them too.
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("Deployment selector %v does not match its pod labels %v", d.Spec.Selector, pod.Labels)
	}
	if r.service == nil {
		t.Fatal("no Service rendered")
	}
	for k, v := range r.service.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod labels %v", k, v, pod.Labels)
		}
	}

	// One HTTPS port, the one the listener binds and the Service targets.
	if len(c.Ports) != 1 || c.Ports[0].Name != "https" || c.Ports[0].ContainerPort != 8443 {
		t.Errorf("container ports %+v, want one named https on 8443", c.Ports)
	}
	if v := envVar(c, "NKUDO_LISTEN"); v == nil || v.Value != "0.0.0.0:8443" {
		t.Errorf("NKUDO_LISTEN = %+v, want 0.0.0.0:8443 (the container port)", v)
	}
	if len(r.service.Spec.Ports) != 1 || r.service.Spec.Ports[0].TargetPort != intstr.FromString("https") {
		t.Errorf("Service ports %+v, want one targeting the https port", r.service.Spec.Ports)
	}

	// Probes: the control plane serves /healthz and /readyz over HTTPS only.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", c.StartupProbe, "/healthz"},
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe missing or not httpGet: %+v", p.name, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Scheme != corev1.URISchemeHTTPS || g.Port != intstr.FromString("https") {
			t.Errorf("%s probe = %s %s port %s, want HTTPS %s on https", p.name, g.Scheme, g.Path, g.Port.String(), p.path)
		}
	}

	// Non-root, no escalation, read-only root: writes go to emptyDirs.
	ps := pod.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v, want runAsNonRoot and a non-zero runAsUser", ps)
	}
	cs := c.SecurityContext
	if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation ||
		cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem {
		t.Errorf("container securityContext %+v, want no privilege escalation and a read-only root", cs)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the pods mount a ServiceAccount token; nkudo never calls the Kubernetes API")
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v, want memory requests and limits", c.Resources)
	}

	// The database URL comes from the Secret, never a literal.
	db := envVar(c, "DATABASE_URL")
	if db == nil || db.Value != "" || db.ValueFrom == nil || db.ValueFrom.SecretKeyRef == nil || db.ValueFrom.SecretKeyRef.Name != dbSecret {
		t.Errorf("DATABASE_URL = %+v, want it from Secret %s", db, dbSecret)
	}
	if v := envVar(c, "REQUIRE_PERSISTENT_PKI"); v == nil || v.Value != "true" {
		t.Errorf("REQUIRE_PERSISTENT_PKI = %+v, want true: replicas must share one CA", v)
	}

	// Every variable is one nkudo reads: a misspelled name would be ignored.
	known := serveEnv(t)
	for _, e := range c.Env {
		if !known[e.Name] {
			t.Errorf("env %s is not read by nkudo serve (no env tag in cmd/nkudo)", e.Name)
		}
	}

	// Every file setting points into a read-only mount of a Secret that
	// carries that file.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	files := map[string]string{
		"CA_CERT_FILE": pkiSecret, "CA_KEY_FILE": pkiSecret, "SERVER_CERT_FILE": pkiSecret,
		"SERVER_KEY_FILE": pkiSecret, "AUDIT_KEY_FILE": pkiSecret, "NKUDO_SECRET_KEY_FILE": "",
	}
	for name, wantSecret := range files {
		e := envVar(c, name)
		if e == nil || e.Value == "" {
			t.Errorf("%s is not set", name)
			continue
		}
		if !mountedFromSecret(c, volumes, e.Value, wantSecret) {
			t.Errorf("%s=%s is not a key of a read-only Secret mount (want Secret %q)", name, e.Value, wantSecret)
		}
	}
	if dd := envVar(c, "NKUDO_DATA_DIR"); dd == nil || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.MountPath == dd.Value && volumes[m.Name].EmptyDir != nil
	}) {
		t.Errorf("NKUDO_DATA_DIR %+v is not a writable emptyDir mount", dd)
	}

	// The NetworkPolicy lets the one port in and selects these pods.
	np := r.networkPolicy
	if np == nil {
		t.Fatal("no NetworkPolicy rendered")
	}
	npSel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if npSel.Empty() || !npSel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("NetworkPolicy podSelector %v does not select the pods %v", np.Spec.PodSelector, pod.Labels)
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || *np.Spec.Ingress[0].Ports[0].Port != intstr.FromString("https") {
		t.Errorf("NetworkPolicy ingress %+v, want the https port only", np.Spec.Ingress)
	}
}

// mountedFromSecret reports whether path is a file of a read-only mount of
// a Secret volume (named wantSecret unless that is empty) that projects it.
func mountedFromSecret(c corev1.Container, volumes map[string]corev1.Volume, path, wantSecret string) bool {
	dir, file := filepath.Split(path)
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) != filepath.Clean(dir) || !m.ReadOnly {
			continue
		}
		s := volumes[m.Name].Secret
		if s == nil || (wantSecret != "" && s.SecretName != wantSecret) {
			continue
		}
		if len(s.Items) == 0 {
			return true
		}
		if slices.ContainsFunc(s.Items, func(k corev1.KeyToPath) bool { return k.Path == file }) {
			return true
		}
	}
	return false
}

// TestHelmTemplateDefaults renders the chart with its defaults.
func TestHelmTemplateDefaults(t *testing.T) {
	r := render(t, helm(t))
	if want := []string{"Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount"}; !slices.Equal(r.kinds, want) {
		t.Errorf("rendered %v, want %v (no ServiceMonitor by default)", r.kinds, want)
	}
	if r.pdb == nil {
		t.Fatal("no PodDisruptionBudget rendered for 2 replicas")
	}
	pdbSel, err := metav1.LabelSelectorAsSelector(r.pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if r.pdb.Spec.MaxUnavailable == nil || *r.pdb.Spec.MaxUnavailable != intstr.FromInt32(1) ||
		pdbSel.Empty() || !pdbSel.Matches(labels.Set(r.deployment.Spec.Template.Labels)) {
		t.Errorf("PodDisruptionBudget %+v, want maxUnavailable 1 over the pods", r.pdb.Spec)
	}
	checkPod(t, r, "nkudo-database", "nkudo-pki")
	if got := r.deployment.Spec.Replicas; got == nil || *got != 2 {
		t.Errorf("replicas = %v, want 2", got)
	}
	if got := r.deployment.Spec.Template.Spec.Containers[0].Image; got != "nkudo:v0.1.0" {
		t.Errorf("image = %s, want nkudo:v0.1.0 (the chart's appVersion)", got)
	}
	if r.serviceAccount == nil || r.deployment.Spec.Template.Spec.ServiceAccountName != r.serviceAccount.Name {
		t.Errorf("pods run as %q, not the rendered ServiceAccount", r.deployment.Spec.Template.Spec.ServiceAccountName)
	}
	if len(r.networkPolicy.Spec.Ingress[0].From) != 0 {
		t.Errorf("ingress from %+v, want anyone by default (agents dial in from anywhere)", r.networkPolicy.Spec.Ingress[0].From)
	}
	if !slices.Contains(r.networkPolicy.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("policy types %v, want egress restricted by default", r.networkPolicy.Spec.PolicyTypes)
	}
}

// TestHelmTemplateValues renders the chart with every optional part on and
// other names (testdata/helm-values.yaml).
func TestHelmTemplateValues(t *testing.T) {
	r := render(t, helm(t), "-f", "testdata/helm-values.yaml")
	if want := []string{"Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceMonitor"}; !slices.Equal(r.kinds, want) {
		t.Errorf("rendered %v, want %v", r.kinds, want)
	}
	checkPod(t, r, "pg-url", "edge-pki")
	d := r.deployment
	if got := d.Spec.Replicas; got == nil || *got != 3 {
		t.Errorf("replicas = %v, want 3", got)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/nkudo:v0.2.0" {
		t.Errorf("image = %s", c.Image)
	}
	if v := envVar(c, "NKUDO_PUBLIC_URL"); v == nil || v.Value != "https://nkudo.example.com:8443" {
		t.Errorf("NKUDO_PUBLIC_URL = %+v", v)
	}
	if v := envVar(c, "NKUDO_EGRESS_ALLOW"); v == nil || v.Value != "10.20.0.0/16" {
		t.Errorf("extra env NKUDO_EGRESS_ALLOW = %+v", v)
	}
	if db := envVar(c, "DATABASE_URL"); db.ValueFrom.SecretKeyRef.Key != "url" {
		t.Errorf("DATABASE_URL key = %s, want url", db.ValueFrom.SecretKeyRef.Key)
	}
	if r.service.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("service type = %s", r.service.Spec.Type)
	}

	sm := r.serviceMonitor
	if sm == nil || len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor %+v, want one endpoint", sm)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != "https" || ep.Path != "/metrics" || ep.Scheme != "https" || ep.Interval != "15s" {
		t.Errorf("ServiceMonitor endpoint %+v, want https /metrics every 15s", ep)
	}
	if s := ep.TLSConfig.CA.Secret; s == nil || s.Name != "edge-pki" || s.Key != "ca.crt" || ep.TLSConfig.ServerName != "nkudo.edge.svc" {
		t.Errorf("ServiceMonitor TLS %+v, want the PKI's ca.crt and the Service's name", ep.TLSConfig)
	}
	smSel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !smSel.Matches(labels.Set(r.service.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the Service %v", sm.Spec.Selector, r.service.Labels)
	}
	if sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels %v, want the extra release=prometheus", sm.Metadata.Labels)
	}

	np := r.networkPolicy
	if from := np.Spec.Ingress[0].From; len(from) != 1 || from[0].NamespaceSelector == nil {
		t.Errorf("ingress from %+v, want the namespaceSelector of the values", from)
	}
	var egressPorts []string
	for _, rule := range np.Spec.Egress {
		for _, p := range rule.Ports {
			egressPorts = append(egressPorts, p.Port.String())
		}
	}
	for _, want := range []string{"53", "6432", "443", "3000"} {
		if !slices.Contains(egressPorts, want) {
			t.Errorf("egress ports %v lack %s", egressPorts, want)
		}
	}
}

// TestHelmTemplateOneReplica renders one replica: a PodDisruptionBudget
// would then block every node drain, so there is none.
func TestHelmTemplateOneReplica(t *testing.T) {
	r := render(t, helm(t), "--set", "replicaCount=1")
	if got := r.deployment.Spec.Replicas; got == nil || *got != 1 {
		t.Errorf("replicas = %v, want 1", got)
	}
	if r.pdb != nil {
		t.Errorf("one replica rendered a PodDisruptionBudget %+v", r.pdb.Spec)
	}
}

// TestHelmTemplateRequiresSecrets shows that a missing Secret name fails the
// rendering with an error naming the value.
func TestHelmTemplateRequiresSecrets(t *testing.T) {
	bin := helm(t)
	for _, value := range []string{"database.existingSecret", "pki.existingSecret", "secretKey.existingSecret"} {
		_, err := runHelm(t, bin, "template", "nkudo", chartDir, "--set", value+"=")
		if err == nil || !strings.Contains(err.Error(), value+":") {
			t.Errorf("helm template with %s empty: %v, want an error naming %s", value, err, value)
		}
	}
}
