{{/* Same names as the upstream chart's helpers. */}}
{{- define "harbor.fullname" -}}
{{- if contains "harbor" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-harbor" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "harbor.labels" -}}
heritage: {{ .Release.Service }}
release: {{ .Release.Name }}
chart: {{ .Chart.Name }}
app: "harbor"
{{- end -}}

{{- define "harbor.workload" -}}
{{- $root := index . 0 -}}{{- $part := index . 1 -}}{{- $port := index . 2 -}}{{- $path := index . 3 -}}
replicas: 1
selector:
  matchLabels:
    release: {{ $root.Release.Name }}
    app: "harbor"
    component: {{ $part }}
template:
  metadata:
    labels:
      release: {{ $root.Release.Name }}
      app: "harbor"
      component: {{ $part }}
  spec:
    containers:
      - name: {{ $part }}
        image: goharbor/harbor-{{ $part }}:v{{ $root.Chart.AppVersion }}
        ports:
          - containerPort: {{ $port }}
        readinessProbe:
          httpGet:
            path: {{ $path }}
            port: {{ $port }}
{{- end -}}
