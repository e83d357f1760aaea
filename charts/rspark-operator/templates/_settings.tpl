{{/*
The settings ConfigMap as kustomize's configMapGenerator makes it from the
base's env file, with .Values.settings over it. Its name carries kustomize's
content hash (sha256 of {"data":...,"kind":"ConfigMap","name":""} as JSON,
first 10 hex digits, 0 1 3 a e spelled g h k m t), so that with default values
it is the base's very name and a change of settings rolls the Deployment.
Input: dict "root" $ "generator" (one configMapGenerator entry) "labels" {...}.
*/}}
{{- define "rspark-operator.settings" -}}
{{- $generator := .generator -}}
{{- $data := dict -}}
{{- $known := list -}}
{{- range $.root.Files.Lines (printf "base/%s" (index $generator.envs 0)) -}}
{{- $line := trim . -}}
{{- if regexMatch "^[A-Za-z_][A-Za-z0-9_]*=" $line -}}
{{- $pair := splitn "=" 2 $line -}}
{{- $_ := set $data $pair._0 $pair._1 -}}
{{- $known = append $known $pair._0 -}}
{{- else if regexMatch "^# [A-Z_][A-Z0-9_]*=$" $line -}}
{{- $known = append $known (trimSuffix "=" (trimPrefix "# " $line)) -}}
{{- end -}}
{{- end -}}
{{- range $name, $value := $.root.Values.settings -}}
{{- if not (has $name $known) -}}
{{- fail (printf "settings: %s is not an operator setting (docs/reference/settings.md)" $name) -}}
{{- end -}}
{{- $_ := set $data $name (toString $value) -}}
{{- end -}}
{{- $hash := dict "data" $data "kind" "ConfigMap" "name" "" | toJson | sha256sum | trunc 10 -}}
{{- $hash = $hash | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t" -}}
{{- $name := printf "%s-%s" $generator.name $hash -}}
{{- $metadata := dict "name" $name "namespace" $generator.namespace "labels" .labels -}}
{{- dict "apiVersion" "v1" "kind" "ConfigMap" "metadata" $metadata "data" $data | toYaml -}}
{{- end -}}
