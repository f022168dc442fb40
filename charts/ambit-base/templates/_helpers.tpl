{{- define "ambit-base.metadata" -}}
labels:
  app.kubernetes.io/name: ambit-base
  app.kubernetes.io/instance: {{ .Release.Name }}
  app.kubernetes.io/managed-by: {{ .Release.Service }}
  app.kubernetes.io/part-of: ambit
  helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
  {{- with .Values.labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if .Values.keepOnUninstall }}
annotations:
  helm.sh/resource-policy: keep
{{- end }}
{{- end }}

{{- /* Istio's workload selector: labels to match. */ -}}
{{- define "ambit-base.selector" -}}
type: object
properties:
  matchLabels:
    type: object
    additionalProperties:
      type: string
{{- end }}

{{- /* A Gateway API style policy target. */ -}}
{{- define "ambit-base.targetRef" -}}
type: object
required: [kind, name]
properties:
  group:
    type: string
  kind:
    type: string
  name:
    type: string
  namespace:
    type: string
{{- end }}

{{- /* Istio's StringMatch: exactly one of exact, prefix, regex. */ -}}
{{- define "ambit-base.stringMatch" -}}
type: object
maxProperties: 1
properties:
  exact:
    type: string
  prefix:
    type: string
  regex:
    type: string
{{- end }}

{{- /* Istio's Percent. */ -}}
{{- define "ambit-base.percent" -}}
type: object
properties:
  value:
    type: number
    minimum: 0
    maximum: 100
{{- end }}

{{- /* Istio's workloadSelector of networking kinds. */ -}}
{{- define "ambit-base.workloadSelector" -}}
type: object
properties:
  labels:
    type: object
    additionalProperties:
      type: string
{{- end }}

{{- define "ambit-base.stringList" -}}
type: array
items:
  type: string
{{- end }}

{{- /* A destination of a route: host, subset, port. */ -}}
{{- define "ambit-base.destination" -}}
type: object
required: [host]
properties:
  host:
    type: string
  subset:
    type: string
  port:
    type: object
    properties:
      number:
        type: integer
        minimum: 0
        maximum: 65535
{{- end }}

{{- /* Headers to set, add and remove on a request or response. */ -}}
{{- define "ambit-base.headerOps" -}}
type: object
properties:
  set:
    type: object
    additionalProperties:
      type: string
  add:
    type: object
    additionalProperties:
      type: string
  remove:
    type: array
    items:
      type: string
{{- end }}

{{- /* Istio's TrafficPolicy (load balancing, connection pool, outlier detection, TLS). */ -}}
{{- define "ambit-base.trafficPolicy" -}}
type: object
properties:
  loadBalancer:
    type: object
    properties:
      simple:
        type: string
        enum: [UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST]
      consistentHash:
        type: object
        x-kubernetes-preserve-unknown-fields: true
      localityLbSetting:
        type: object
        x-kubernetes-preserve-unknown-fields: true
      warmupDurationSecs:
        type: string
  connectionPool:
    type: object
    properties:
      tcp:
        type: object
        properties:
          maxConnections:
            type: integer
            format: int32
          connectTimeout:
            type: string
          tcpKeepalive:
            type: object
            x-kubernetes-preserve-unknown-fields: true
          maxConnectionDuration:
            type: string
          idleTimeout:
            type: string
      http:
        type: object
        properties:
          http1MaxPendingRequests:
            type: integer
            format: int32
          http2MaxRequests:
            type: integer
            format: int32
          maxRequestsPerConnection:
            type: integer
            format: int32
          maxRetries:
            type: integer
            format: int32
          idleTimeout:
            type: string
          h2UpgradePolicy:
            type: string
            enum: [DEFAULT, DO_NOT_UPGRADE, UPGRADE]
          useClientProtocol:
            type: boolean
          maxConcurrentStreams:
            type: integer
            format: int32
  outlierDetection:
    type: object
    properties:
      consecutiveErrors:
        type: integer
        format: int32
      consecutive5xxErrors:
        type: integer
        minimum: 0
      consecutiveGatewayErrors:
        type: integer
        minimum: 0
      consecutiveLocalOriginFailures:
        type: integer
        minimum: 0
      splitExternalLocalOriginErrors:
        type: boolean
      interval:
        type: string
      baseEjectionTime:
        type: string
      maxEjectionPercent:
        type: integer
        format: int32
      minHealthPercent:
        type: integer
        format: int32
  tls:
    type: object
    properties:
      mode:
        type: string
        enum: [DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL]
      clientCertificate:
        type: string
      privateKey:
        type: string
      caCertificates:
        type: string
      credentialName:
        type: string
      subjectAltNames:
        type: array
        items:
          type: string
      sni:
        type: string
      insecureSkipVerify:
        type: boolean
  portLevelSettings:
    type: array
    items:
      type: object
      x-kubernetes-preserve-unknown-fields: true
  tunnel:
    type: object
    x-kubernetes-preserve-unknown-fields: true
  proxyProtocol:
    type: object
    x-kubernetes-preserve-unknown-fields: true
{{- end }}
