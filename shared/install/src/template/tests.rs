use serde_json::json;

use super::*;

fn render(source: &str, data: Value) -> Result<String, TemplateError> {
    let mut set = TemplateSet::new();
    set.add("t", source)?;
    set.render("t", &data)
}

#[test]
fn fields_variables_and_pipelines() {
    let data = json!({"Values": {"name": "zt", "port": 15008}, "Release": {"Name": "r"}});
    let out = render(
        r#"{{ $n := .Values.name }}{{ $n }}-{{ .Values.port }}-{{ .Values.name | upper | quote }}-{{ $.Release.Name }}"#,
        data,
    );
    assert_eq!(out.unwrap(), r#"zt-15008-"ZT"-r"#);
}

#[test]
fn if_else_if_else_chooses_the_first_true_branch() {
    let source = "{{ if eq .x 1 }}one{{ else if eq .x 2 }}two{{ else }}many{{ end }}";
    assert_eq!(render(source, json!({"x": 1})).unwrap(), "one");
    assert_eq!(render(source, json!({"x": 2})).unwrap(), "two");
    assert_eq!(render(source, json!({"x": 9})).unwrap(), "many");
}

#[test]
fn range_over_lists_and_maps_in_key_order() {
    let source = "{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}|{{ range $k, $v := .m }}{{ $k }}={{ . }};{{ end }}|{{ range .e }}x{{ else }}empty{{ end }}";
    let out = render(
        source,
        json!({"l": ["a", "b"], "m": {"z": 1, "a": 2}, "e": []}),
    );
    assert_eq!(out.unwrap(), "0=a;1=b;|a=2;z=1;|empty");
}

#[test]
fn with_rebinds_dot_and_falls_back_to_else() {
    let source = "{{ with .a }}{{ .b }}{{ else }}none{{ end }}";
    assert_eq!(render(source, json!({"a": {"b": "x"}})).unwrap(), "x");
    assert_eq!(render(source, json!({"a": {}})).unwrap(), "none");
}

#[test]
fn define_include_and_nindent_compose() {
    let source = "{{- define \"labels\" -}}\napp: {{ .name }}\ntier: mesh\n{{- end -}}\nmetadata:\n  labels:\n    {{- include \"labels\" . | nindent 4 }}\n";
    let out = render(source, json!({"name": "ztunnel"})).unwrap();
    assert_eq!(
        out,
        "metadata:\n  labels:\n    app: ztunnel\n    tier: mesh\n"
    );
}

#[test]
fn template_action_renders_a_define() {
    let source = "{{ define \"x\" }}[{{ . }}]{{ end }}{{ template \"x\" .v }}";
    assert_eq!(render(source, json!({"v": 3})).unwrap(), "[3]");
}

#[test]
fn and_or_return_the_deciding_value_and_short_circuit() {
    // `.missing.deep` would fail if evaluated; `or` stops at the first true argument.
    let source = r#"{{ or .a .missing.deep }}|{{ and .z "y" }}|{{ and "x" "y" }}"#;
    assert_eq!(
        render(source, json!({"a": "first", "z": 0})).unwrap(),
        "first|0|y"
    );
}

#[test]
fn parenthesized_sub_pipelines() {
    let out = render(
        r#"{{ printf "%s:%d" (.h | lower) (add1) }}"#,
        json!({"h": "H"}),
    );
    assert!(
        out.unwrap_err()
            .message
            .contains("not in the supported subset")
    );
    let out = render(
        r#"{{ printf "%s:%d" (.h | lower) .p }}"#,
        json!({"h": "H", "p": 8}),
    );
    assert_eq!(out.unwrap(), "h:8");
}

#[test]
fn reading_a_field_of_nil_names_the_path_and_line() {
    let err = render("a\nb\n{{ .Values.x.y }}", json!({"Values": {}})).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.message.contains(".Values.x.y"), "{err}");
}

#[test]
fn a_missing_key_prints_nothing() {
    assert_eq!(render("[{{ .nope }}]", json!({})).unwrap(), "[]");
}

#[test]
fn unsupported_syntax_is_an_error_not_a_different_output() {
    assert!(render("{{ block \"x\" . }}{{ end }}", json!({})).is_err());
    assert!(render("{{ if .a }}x", json!({})).is_err());
    assert!(render("{{ end }}", json!({})).is_err());
    assert!(render("{{ .a .b }}", json!({"a": 1, "b": 2})).is_err());
    assert!(render("{{ .m }}", json!({"m": {"a": 1}})).is_err());
}

#[test]
fn assignment_updates_an_outer_variable() {
    let source = "{{ $seen := false }}{{ range .l }}{{ if eq . 2 }}{{ $seen = true }}{{ end }}{{ end }}{{ $seen }}";
    assert_eq!(render(source, json!({"l": [1, 2]})).unwrap(), "true");
}

#[test]
fn files_get_reads_chart_files() {
    let mut set = TemplateSet::new();
    set.add_file("files/a.txt", "hello {{ . }}".into());
    set.add("t", r#"{{ .Files.Get "files/a.txt" | quote }}"#)
        .unwrap();
    assert_eq!(set.render("t", &json!({})).unwrap(), r#""hello {{ . }}""#);
    set.add("u", r#"{{ .Files.Get "files/none" }}"#).unwrap();
    assert!(set.render("u", &json!({})).is_err());
}

#[test]
fn include_recursion_is_bounded() {
    let source = "{{ define \"loop\" }}{{ include \"loop\" . }}{{ end }}{{ include \"loop\" . }}";
    assert!(
        render(source, json!({}))
            .unwrap_err()
            .message
            .contains("deep")
    );
}

#[test]
fn add_sums_integers_and_concat_joins_lists() {
    let source = r#"{{ add 1 .n 3 }}|{{ join "," (concat (list "a") .l) }}"#;
    assert_eq!(
        render(source, json!({"n": 2, "l": ["b", "c"]})).unwrap(),
        "6|a,b,c"
    );
    assert!(render(r#"{{ add 1 "x" }}"#, json!({})).is_err());
    assert!(render(r#"{{ concat (list 1) 2 }}"#, json!({})).is_err());
}
