//! Tests of the SQL surface, run inside PostgreSQL by `cargo pgrx test`. Each test runs in its
//! own transaction, rolled back afterwards.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{e}: {sql}"))
    }

    /// The SQLSTATE and message a statement fails with, or None if it succeeds.
    fn failure(sql: &str) -> Option<String> {
        if one::<bool>("SELECT to_regprocedure('pg_temp.failure(text)') IS NULL") == Some(true) {
            run(
                "CREATE FUNCTION pg_temp.failure(q text) RETURNS text LANGUAGE plpgsql AS \
                 $$ BEGIN EXECUTE q; RETURN NULL; \
                    EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$",
            );
        }
        one::<String>(&format!("SELECT pg_temp.failure({})", quote(sql)))
    }

    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    /// Registers meter `n` (uuid 00000000-0000-0000-0000-00000000000n) with `metadata` and
    /// stores `(minutes after 2024-01-01T00:00Z, imported kWh)` readings.
    fn meter(n: u32, metadata: &str, readings: &[(i64, f64)]) -> String {
        let id = format!("00000000-0000-0000-0000-{n:012}");
        run(&format!(
            "INSERT INTO flux.mg_device_registry (id, name, type, site, metadata) \
             VALUES ('{id}', 'TEST-METER-{n}', 'meter', 'WLCE', '{metadata}')"
        ));
        for (minute, kwh) in readings {
            run(&format!(
                "INSERT INTO flux.mg_meter_readings (device_id, time, energy_imported_active, power_total_active) \
                 VALUES ('{id}', '2024-01-01T00:00Z'::timestamptz + {minute} * interval '1 minute', {kwh}, {minute})"
            ));
        }
        id
    }

    /// `(minutes of time_b, imported delta)` rows of a query over one device's buckets.
    fn deltas(sql: &str) -> Vec<(i64, Option<f64>)> {
        Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT (extract(epoch FROM time_b - '2024-01-01T00:00Z') / 60)::int8, \
                         energy_imported_active_delta FROM ({sql}) q ORDER BY time_b"
                    ),
                    None,
                    &[],
                )
                .unwrap()
                .map(|row| {
                    (
                        row.get::<i64>(1).unwrap().unwrap(),
                        row.get::<f64>(2).unwrap(),
                    )
                })
                .collect()
        })
    }

    fn approx(actual: &[(i64, Option<f64>)], expected: &[(i64, f64)]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for ((t, d), (et, ed)) in actual.iter().zip(expected) {
            assert_eq!(t, et, "{actual:?} vs {expected:?}");
            assert!((d.unwrap() - ed).abs() < 1e-9, "{actual:?} vs {expected:?}");
        }
    }

    const AT: &str = "'2024-01-01T00:00Z'::timestamptz";

    #[pg_test]
    fn schema_has_documented_tables() {
        let n = one::<i64>(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'flux' AND tablename IN \
             ('mg_device_registry','mg_bess_readings','mg_meter_readings','market_data')",
        );
        assert_eq!(n, Some(4));
    }

    #[pg_test]
    fn documented_rpcs_on_the_public_vectors() {
        let t1 = meter(
            1,
            "{}",
            &[(0, 100.0), (30, 110.0), (60, 125.0), (90, 125.0)],
        );
        approx(
            &deltas(&format!("SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '90 min', ARRAY['{t1}'::uuid])")),
            &[(0, 10.0), (30, 15.0), (60, 0.0)],
        );
        let t2 = meter(
            2,
            "{}",
            &[(10, 100.0), (40, 130.0), (70, 160.0), (100, 190.0)],
        );
        approx(
            &deltas(&format!("SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '150 min', ARRAY['{t2}'::uuid])")),
            &[(0, 20.0), (30, 30.0), (60, 30.0), (90, 10.0)],
        );
        let t4 = meter(
            4,
            r#"{"max_power_kw": 100}"#,
            &[(0, 1000.0), (30, 1010.0), (60, 5.0), (90, 20.0)],
        );
        approx(
            &deltas(&format!("SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '90 min', ARRAY['{t4}'::uuid])")),
            &[(0, 10.0), (30, 5.0), (60, 15.0)],
        );
        let t5 = meter(
            5,
            r#"{"energy_jitter_kwh": 0.5}"#,
            &[
                (0, 3598.0),
                (10, 3598.3),
                (20, 3598.2),
                (30, 3598.4),
                (40, 3598.6),
            ],
        );
        approx(
            &deltas(&format!("SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '1 hour', ARRAY['{t5}'::uuid])")),
            &[(0, 0.4), (30, 0.2)],
        );
        let t8 = meter(
            8,
            "{}",
            &[(0, 100.0), (30, 110.0), (180, 170.0), (210, 180.0)],
        );
        approx(
            &deltas(&format!("SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '210 min', ARRAY['{t8}'::uuid])")),
            &[(0, 10.0), (30, 12.0), (60, 12.0), (90, 12.0), (120, 12.0), (150, 12.0), (180, 10.0)],
        );
        // Empty buckets inside the span have an interpolated share and no mean power.
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM flux.get_meter_readings_30m({AT}, {AT} + interval '210 min', ARRAY['{t8}'::uuid]) \
                 WHERE power_total_active_avg IS NULL"
            )),
            Some(4)
        );
        // T3 with 15-minute buckets through the general function, flagged interpolated.
        let t3 = meter(3, "{}", &[(20, 100.0), (70, 150.0)]);
        approx(
            &deltas(&format!("SELECT * FROM flux.meter_energy_buckets({AT}, {AT} + interval '2 hours', interval '15 minutes', ARRAY['{t3}'::uuid])")),
            &[(15, 10.0), (30, 15.0), (45, 15.0), (60, 10.0)],
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(array_to_string(energy_imported_active_quality, '+'), ',' ORDER BY time_b) \
                 FROM flux.meter_energy_buckets({AT}, {AT} + interval '2 hours', interval '15 minutes', ARRAY['{t3}'::uuid])"
            ))
            .as_deref(),
            Some(",interpolated,interpolated,")
        );
    }

    #[pg_test]
    fn five_minute_deltas_add_up_to_thirty_minute_deltas() {
        let readings: Vec<(i64, f64)> = (0..400)
            .map(|i| {
                (
                    i * 7 + i % 3,
                    1000.0 + (i as f64) * 1.7 - if i % 11 == 0 { 0.1 } else { 0.0 },
                )
            })
            .collect();
        let id = meter(1, "{}", &readings);
        let mismatch = one::<f64>(&format!(
            "SELECT max(abs(h.energy_imported_active_delta - f.s)) FROM \
               flux.get_meter_readings_30m({AT}, {AT} + interval '2 days', ARRAY['{id}'::uuid]) h \
               JOIN (SELECT date_bin('30 minutes', time_b, 'epoch') b, sum(energy_imported_active_delta) s \
                     FROM flux.get_meter_readings_5m({AT}, {AT} + interval '2 days', ARRAY['{id}'::uuid]) GROUP BY 1) f \
               ON f.b = h.time_b"
        ));
        assert!(mismatch.unwrap() < 1e-9, "{mismatch:?}");
    }

    #[pg_test]
    fn rollups_give_what_raw_readings_give() {
        let readings: Vec<(i64, f64)> = (0..600)
            .map(|i| {
                (
                    i * 5 + i % 4,
                    500.0 + (i as f64) * 0.9 + if i == 300 { 700.0 } else { 0.0 },
                )
            })
            .collect();
        let id = meter(1, r#"{"max_power_kw": 100}"#, &readings);
        let query = format!(
            "SELECT * FROM flux.meter_energy_buckets({AT} + interval '7 hours', {AT} + interval '2 days', \
             interval '1 hour', ARRAY['{id}'::uuid])"
        );
        run("SET flux.energy_rollups = off");
        run(&format!("CREATE TEMP TABLE raw AS {query}"));
        run("RESET flux.energy_rollups");
        assert!(one::<i64>("SELECT flux.refresh_energy_rollups()").unwrap() > 0);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM flux_internal.meter_rollup_pending"),
            Some(0)
        );
        assert!(one::<i64>("SELECT count(*) FROM flux_internal.meter_rollup_5m").unwrap() > 400);
        run(&format!("CREATE TEMP TABLE rolled AS {query}"));
        let differing = one::<i64>(
            "SELECT count(*) FROM raw r FULL JOIN rolled o USING (time_b, device_id) \
             WHERE r.time_b IS NULL OR o.time_b IS NULL OR r.reading_count <> o.reading_count \
                OR abs(r.energy_imported_active_delta - o.energy_imported_active_delta) > 1e-9 \
                OR r.energy_imported_active_quality <> o.energy_imported_active_quality \
                OR r.energy_imported_active_coverage <> o.energy_imported_active_coverage \
                OR abs(r.energy_imported_active_set_aside - o.energy_imported_active_set_aside) > 1e-9 \
                OR abs(r.power_total_active_avg - o.power_total_active_avg) > 1e-9",
        );
        assert_eq!(differing, Some(0));
        assert!(one::<i64>("SELECT count(*) FROM rolled").unwrap() > 30);
    }

    #[pg_test]
    fn a_bucket_does_not_depend_on_the_query_range() {
        let readings: Vec<(i64, f64)> = (0..300)
            .map(|i| {
                (
                    i * 13,
                    50.0 + (i as f64) * 0.9 + if i == 150 { 0.3 } else { 0.0 },
                )
            })
            .collect();
        let id = meter(1, "{}", &readings);
        let wide = deltas(&format!(
            "SELECT * FROM flux.get_meter_readings_5m({AT}, {AT} + interval '3 days', ARRAY['{id}'::uuid]) \
             WHERE time_b >= {AT} + interval '20 hours' AND time_b < {AT} + interval '25 hours'"
        ));
        let narrow = deltas(&format!(
            "SELECT * FROM flux.get_meter_readings_5m({AT} + interval '20 hours', {AT} + interval '25 hours', ARRAY['{id}'::uuid])"
        ));
        assert_eq!(wide.len(), 60);
        assert_eq!(wide, narrow);
        // An unaligned start returns the whole bucket that contains it.
        let unaligned = deltas(&format!(
            "SELECT * FROM flux.get_meter_readings_5m({AT} + interval '20 hours 2 minutes', {AT} + interval '25 hours', ARRAY['{id}'::uuid])"
        ));
        assert_eq!(unaligned, narrow);
    }

    /// F5: the context is counted per register. A meter that reports power every minute and
    /// energy every 15 minutes gets the same buckets whatever the query range.
    #[pg_test]
    fn the_context_is_counted_per_register() {
        let id = "00000000-0000-0000-0000-000000000009";
        run(&format!(
            "INSERT INTO flux.mg_device_registry (id, name, type, site) VALUES ('{id}', 'SPARSE', 'meter', 'WLCE')"
        ));
        run(&format!(
            "INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active) \
             SELECT '{id}', {AT} + m * interval '1 minute', 20, \
                    CASE WHEN m % 15 = 0 THEN 1000 + m / 3.0 + CASE WHEN m = 300 THEN -0.4 ELSE 0 END END \
             FROM generate_series(0, 1439) m"
        ));
        let wide = deltas(&format!(
            "SELECT * FROM flux.get_meter_readings_5m({AT}, {AT} + interval '1 day', ARRAY['{id}'::uuid]) \
             WHERE time_b >= {AT} + interval '5 hours' AND time_b < {AT} + interval '6 hours'"
        ));
        let narrow = deltas(&format!(
            "SELECT * FROM flux.get_meter_readings_5m({AT} + interval '5 hours', {AT} + interval '6 hours', ARRAY['{id}'::uuid])"
        ));
        assert_eq!(wide.len(), 12);
        assert_eq!(wide, narrow);
    }

    /// R7: energy that is not booked is reported per bucket and summed per device and reason.
    #[pg_test]
    fn set_aside_energy_is_reported() {
        // A max_power_kw of 1 W (a kW/W mix-up): every rise is beyond it.
        let readings: Vec<(i64, f64)> = (0..=12).map(|i| (i * 5, 100.0 + 2.0 * i as f64)).collect();
        let id = meter(1, r#"{"max_power_kw": 0.001}"#, &readings);
        let per_bucket = one::<f64>(&format!(
            "SELECT sum(energy_imported_active_set_aside) FROM \
             flux.meter_energy_buckets({AT}, {AT} + interval '1 hour', interval '30 minutes', ARRAY['{id}'::uuid])"
        ))
        .unwrap();
        assert!((per_bucket - 22.0).abs() < 1e-9, "{per_bucket}");
        let summary = one::<String>(&format!(
            "SELECT string_agg(register || ' ' || reason || ' ' || round(set_aside_kwh::numeric, 3) || ' ' || round(booked_kwh::numeric, 3), '; ') \
             FROM flux.meter_energy_set_aside({AT}, {AT} + interval '1 hour', ARRAY['{id}'::uuid])"
        ));
        assert_eq!(
            summary.as_deref(),
            Some("energy_imported_active re-base 22.000 0.000")
        );
        let flags = one::<String>(&format!(
            "SELECT string_agg(DISTINCT q, ',') FROM flux.meter_energy_buckets({AT}, {AT} + interval '1 hour', \
             interval '30 minutes', ARRAY['{id}'::uuid]), unnest(energy_imported_active_quality) q"
        ));
        assert_eq!(flags.as_deref(), Some("meter_change"));
    }

    /// Readings stored out of time order (a late back-fill) give the same result as in order.
    #[pg_test]
    fn physical_order_of_the_readings_does_not_matter() {
        let readings: Vec<(i64, f64)> =
            (0..200).map(|i| (i * 5, 10.0 + (i as f64) * 0.5)).collect();
        let (late, early): (Vec<_>, Vec<_>) = readings.iter().partition(|(m, _)| m % 100 < 40);
        let a = meter(1, "{}", &readings);
        let b = meter(
            2,
            "{}",
            &early.into_iter().chain(late).copied().collect::<Vec<_>>(),
        );
        // A sequential scan yields b's readings in insertion order, out of time order.
        run("SET LOCAL enable_indexscan = off");
        run("SET LOCAL enable_bitmapscan = off");
        let query = |id: &str| {
            deltas(&format!(
                "SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '1 day', ARRAY['{id}'::uuid])"
            ))
        };
        assert_eq!(query(&a), query(&b));
        // Also through the all-devices scan.
        let all = |id: &str| {
            deltas(&format!(
                "SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '1 day', NULL) WHERE device_id = '{id}'"
            ))
        };
        assert_eq!(all(&a), all(&b));
        assert_eq!(all(&a), query(&a));
    }

    #[pg_test]
    fn thirty_minute_rows_carry_the_settlement_period() {
        let id = meter(1, "{}", &[(0, 1.0), (60, 2.0)]);
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(settlement_date || '#' || settlement_period, ',' ORDER BY time_b) \
                 FROM flux.get_meter_readings_30m('2023-12-31T23:00Z', {AT} + interval '1 hour', ARRAY['{id}'::uuid])"
            ))
            .as_deref(),
            Some("2024-01-01#1,2024-01-01#2"),
            "no rows before the data, one per settlement period after"
        );
        for (at, expected) in [
            ("2024-03-31T01:00Z", "(2024-03-31,3,46)"),
            ("2024-10-27T01:00Z", "(2024-10-27,5,50)"),
            ("2024-10-26T23:00Z", "(2024-10-27,1,50)"),
            ("2025-01-15T12:10Z", "(2025-01-15,25,48)"),
            ("2024-06-15T22:59Z", "(2024-06-15,48,48)"),
        ] {
            assert_eq!(
                one::<String>(&format!("SELECT flux.settlement_period('{at}')::text")).as_deref(),
                Some(expected),
                "{at}"
            );
        }
    }

    #[pg_test]
    fn bad_arguments_get_clear_errors() {
        // Metadata written before the registry checked it (the check is a trigger).
        run("ALTER TABLE flux.mg_device_registry DISABLE TRIGGER check_metadata");
        let id = meter(1, r#"{"max_power_kw": "lots"}"#, &[(0, 1.0)]);
        run("ALTER TABLE flux.mg_device_registry ENABLE TRIGGER check_metadata");
        let ok = meter(2, "{}", &[(0, 1.0)]);
        let cases = [
            (format!("SELECT * FROM flux.get_meter_readings_5m({AT}, {AT}, NULL)"), "22023: empty time range"),
            (format!("SELECT * FROM flux.get_meter_readings_5m({AT} + interval '1 hour', {AT}, NULL)"), "22023: empty time range"),
            (format!("SELECT * FROM flux.get_meter_readings_5m(NULL, {AT}, NULL)"), "22004: start_time must not be null"),
            (format!("SELECT * FROM flux.get_meter_readings_30m({AT}, NULL, NULL)"), "22004: end_time must not be null"),
            (format!("SELECT * FROM flux.get_meter_readings_5m('-infinity', {AT}, NULL)"), "22023: start_time must be a finite time"),
            (format!("SELECT * FROM flux.get_meter_readings_5m({AT}, {AT} + interval '401 days', NULL)"), "22023: "),
            (format!("SELECT * FROM flux.get_meter_readings_5m({AT}, {AT} + interval '1 day', ARRAY['{ok}'::uuid, NULL])"), "22004: device_ids must not contain null"),
            (format!("SELECT * FROM flux.get_meter_readings_5m({AT}, {AT} + interval '1 day', ARRAY['{ok}'::uuid, '11111111-1111-1111-1111-111111111111'])"), "22023: unknown device id(s) 11111111-1111-1111-1111-111111111111"),
            (format!("SELECT * FROM flux.get_meter_readings_5m({AT}, {AT} + interval '1 day', ARRAY['{id}'::uuid])"), "22023: device 00000000-0000-0000-0000-000000000001 (TEST-METER-1): metadata.max_power_kw"),
            (format!("SELECT * FROM flux.meter_energy_buckets({AT}, {AT} + interval '1 day', interval '1 month', NULL)"), "22023: bucket_width must be a fixed duration"),
            (
                "SELECT * FROM flux.get_meter_readings_30m('294270-01-01 00:00+00', '294270-01-01 01:00+00', NULL)".to_owned(),
                "22023: start_time is after the latest supported time",
            ),
            (format!("SELECT * FROM flux.meter_energy_buckets({AT}, {AT} + interval '1 day', interval '0.5 seconds', NULL)"), "22023: bucket_width must be a fixed duration"),
            (format!("SELECT * FROM flux.meter_energy_buckets({AT}, {AT} + interval '1 day', NULL, NULL)"), "22004: bucket_width must not be null"),
        ];
        for (sql, expected) in cases {
            let got = failure(&sql).unwrap_or_default();
            assert!(
                got.starts_with(expected),
                "{sql}\n  expected {expected}\n  got {got}"
            );
        }
        // 400 days of 5-minute buckets is the limit, and allowed.
        assert_eq!(
            failure(&format!("SELECT * FROM flux.get_meter_readings_5m({AT}, {AT} + interval '400 days', ARRAY['{ok}'::uuid])")),
            None
        );
        // A malformed setting is refused when set.
        assert!(failure("SET flux.energy_jitter_kwh = -1")
            .unwrap()
            .starts_with("22023"));
    }

    #[pg_test]
    fn the_registry_refuses_metadata_the_energy_functions_cannot_use() {
        for (metadata, expected) in [
            (
                r#"{"max_power_kw": -5}"#,
                "23514: invalid metadata for device TEST-METER-1: metadata.max_power_kw",
            ),
            (
                r#"{"max_power": "lots"}"#,
                "23514: invalid metadata for device TEST-METER-1: metadata.max_power",
            ),
            (
                r#"{"energy_register_max_kwh": 0}"#,
                "23514: invalid metadata for device TEST-METER-1: metadata.energy_register_max_kwh",
            ),
            (
                r#"{"energy_jitter_kwh": -0.1}"#,
                "23514: invalid metadata for device TEST-METER-1: metadata.energy_jitter_kwh",
            ),
        ] {
            let got = failure(&format!(
                "INSERT INTO flux.mg_device_registry (name, type, metadata) VALUES ('TEST-METER-1', 'meter', '{metadata}')"
            ))
            .unwrap_or_default();
            assert!(got.starts_with(expected), "{metadata}: {got}");
        }
        let id = meter(1, r#"{"max_power_kw": "250", "capacity_kwh": 500}"#, &[]);
        let got = failure(&format!(
            "UPDATE flux.mg_device_registry SET metadata = '{{\"max_power_kw\": 0}}' WHERE id = '{id}'"
        ))
        .unwrap_or_default();
        assert!(got.starts_with("23514"), "{got}");
    }

    #[pg_test]
    fn row_level_security_decides_which_devices_exist() {
        let visible = meter(1, "{}", &[(0, 1.0), (30, 2.0)]);
        let hidden = meter(2, "{}", &[(0, 1.0), (30, 5.0)]);
        run("CREATE ROLE flux_test_reader NOLOGIN");
        run("GRANT USAGE ON SCHEMA flux TO flux_test_reader");
        run("GRANT SELECT ON flux.mg_device_registry, flux.mg_meter_readings TO flux_test_reader");
        run(&format!("CREATE POLICY test_one ON flux.mg_device_registry FOR SELECT TO flux_test_reader USING (id = '{visible}')"));
        run(&format!("CREATE POLICY test_one ON flux.mg_meter_readings FOR SELECT TO flux_test_reader USING (device_id = '{visible}')"));
        run("SET LOCAL ROLE flux_test_reader");
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(DISTINCT device_id::text, ',') FROM flux.get_meter_readings_30m({AT}, {AT} + interval '1 hour', NULL)"
            )),
            Some(visible.clone())
        );
        let err = failure(&format!(
            "SELECT * FROM flux.get_meter_readings_30m({AT}, {AT} + interval '1 hour', ARRAY['{hidden}'::uuid])"
        ))
        .unwrap();
        assert!(err.starts_with("22023: unknown device id(s)"), "{err}");
        run("RESET ROLE");
    }

    #[pg_test]
    fn the_request_guard_checks_the_key_and_counts_requests() {
        let key = one::<String>("SELECT flux.sign_jwt('{\"role\": \"anon\"}')").unwrap();
        let request = |headers: &str| {
            run(&format!(
                "SELECT set_config('request.headers', {}, true)",
                quote(headers)
            ));
            one::<Vec<String>>("SELECT flux_internal.check_request()")
        };
        run("SET LOCAL ROLE anon");
        let missing = request("{}").expect("refused");
        assert!(
            missing[0].contains("No API key found in request"),
            "{missing:?}"
        );
        assert!(missing[1].contains("\"status\":401"), "{missing:?}");
        let invalid = request(r#"{"apikey": "x.y.z"}"#).expect("refused");
        assert!(invalid[0].contains("Invalid API key"), "{invalid:?}");

        let headers = format!(r#"{{"apikey": "{key}", "x-forwarded-for": "192.0.2.1"}}"#);
        assert_eq!(request(&headers), None);
        let first = one::<String>("SELECT current_setting('response.headers')").unwrap();
        assert_eq!(request(&headers), None);
        let second = one::<String>("SELECT current_setting('response.headers')").unwrap();
        assert!(first.contains(r#"{"X-RateLimit-Limit":"60"}"#), "{first}");
        assert!(
            first.contains(r#"{"X-RateLimit-Remaining":"99"}"#),
            "{first}"
        );
        assert!(
            second.contains(r#"{"X-RateLimit-Remaining":"98"}"#),
            "{second}"
        );
        // pre_request() turns a refusal into PostgREST's error.
        run("SELECT set_config('request.headers', '{}', true)");
        assert!(failure("SELECT flux_internal.pre_request()")
            .unwrap()
            .starts_with("PGRST: "));
        run("RESET ROLE");
    }

    #[pg_test]
    fn sign_jwt_signs_with_the_configured_secret() {
        let token = one::<String>(
            "SELECT flux.sign_jwt('{\"role\": \"anon\", \"sub\": \"x\"}', interval '1 hour')",
        )
        .unwrap();
        let claims = flux_jwt::verify(
            &token,
            b"pg-test-secret-that-is-at-least-32-characters",
            1_700_000_000,
        )
        .expect("verifies with the secret of postgresql_conf_options");
        assert_eq!(claims["role"], "anon");
        assert_eq!(claims["sub"], "x");
        let exp = claims["exp"].as_i64().unwrap();
        let iat = claims["iat"].as_i64().unwrap();
        assert_eq!(exp - iat, 3600);
        assert!(failure("SELECT flux.sign_jwt('{\"role\": \"postgres\"}')")
            .unwrap()
            .starts_with("22023"));
        assert!(
            failure("SELECT flux.sign_jwt('{\"role\": \"anon\", \"exp\": 4102444800}')")
                .unwrap()
                .starts_with("22023"),
            "the lifetime is valid_for's to set"
        );
        assert!(failure("SELECT flux.sign_jwt('[1]')")
            .unwrap()
            .starts_with("22023"));
        assert!(
            failure("SELECT flux.sign_jwt('{\"role\": \"anon\"}', interval '-1 hour')")
                .unwrap()
                .starts_with("22023")
        );
        // Nobody but superusers and the service role may mint keys, or read the secret.
        run("SET LOCAL ROLE anon");
        assert!(
            failure("SELECT flux.sign_jwt('{\"role\": \"service_role\"}')")
                .unwrap()
                .starts_with("42501")
        );
        assert!(failure("SELECT current_setting('flux.jwt_secret')")
            .unwrap()
            .starts_with("42501"));
        run("RESET ROLE");
    }

    #[pg_test]
    fn partitions_align_to_their_interval_in_utc() {
        // Whatever the session's time zone: boundaries are UTC instants.
        run("SET LOCAL TimeZone = 'America/New_York'");
        let starts = [
            ("2026-11-29 13:00+00", "1 day", "2026-11-29 00:00:00+00"),
            ("2026-11-29 23:59+00", "6 hours", "2026-11-29 18:00:00+00"),
            ("2026-07-01 00:30+01", "1 month", "2026-06-01 00:00:00+00"),
            ("1999-12-15 00:00+00", "3 months", "1999-10-01 00:00:00+00"),
            ("1066-10-14 12:00+00", "1 year", "1066-01-01 00:00:00+00"),
            ("0001-01-01 00:00+00", "1 day", "0001-01-01 00:00:00+00"),
        ];
        for (t, step, expected) in starts {
            let got = one::<String>(&format!(
                "SELECT to_char(flux_internal.partition_start('{t}', '{step}') AT TIME ZONE 'UTC',                  'YYYY-MM-DD HH24:MI:SS') || '+00'"
            ));
            assert_eq!(got.as_deref(), Some(expected), "{t} by {step}");
        }
        assert_eq!(
            one::<i64>(
                "SELECT flux_internal.partition_count('2026-01-01', '2026-01-31', '1 day')::int8"
            ),
            Some(31)
        );
    }

    #[pg_test]
    fn maintenance_makes_partitions_ahead_and_moves_strays_out() {
        let actions =
            one::<i64>("SELECT count(*) FROM flux.run_maintenance() WHERE action = 'created'");
        assert_eq!(
            actions,
            Some(4 + 4 + 3),
            "today and 3 days ahead, this month and 2 ahead"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM flux.run_maintenance()"),
            Some(0)
        );

        let id = meter(1, "{}", &[(0, 1.0), (1, 2.0)]);
        run(&format!(
            "INSERT INTO flux.mg_meter_readings (device_id, time, energy_imported_active) \
             VALUES ('{id}', '2999-01-01', 3)"
        ));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM flux_partitions.mg_meter_readings_default"),
            Some(3)
        );
        let moved = one::<String>(
            "SELECT string_agg(partition_name || ' ' || detail, '; ' ORDER BY partition_name) \
             FROM flux.run_maintenance() WHERE action = 'moved'",
        );
        assert_eq!(
            moved.as_deref(),
            Some(
                "flux_partitions.mg_meter_readings_p20240101 2 rows from flux_partitions.mg_meter_readings_default; \
                 flux_partitions.mg_meter_readings_p29990101 1 rows from flux_partitions.mg_meter_readings_default"
            )
        );
        // Two readings of one day, long past, share their year's partition; the future one has
        // its day.
        assert_eq!(
            one::<String>(
                "SELECT string_agg(lower::text || '..' || upper::text, ' ' ORDER BY lower) \
                 FROM flux_internal.time_partitions('flux.mg_meter_readings') \
                 WHERE partition::text IN ('flux_partitions.mg_meter_readings_p20240101', 'flux_partitions.mg_meter_readings_p29990101')"
            )
            .as_deref(),
            Some(
                "2024-01-01 00:00:00+00..2025-01-01 00:00:00+00 2999-01-01 00:00:00+00..2999-01-02 00:00:00+00"
            )
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM flux_partitions.mg_meter_readings_default"),
            Some(0)
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM flux.mg_meter_readings"),
            Some(3)
        );
        // The new partitions check references per statement, like the rest.
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM pg_trigger t JOIN pg_constraint c ON c.oid = t.tgconstraint \
                 WHERE c.conname = 'mg_meter_readings_device_id_fkey' AND t.tgrelid <> c.confrelid \
                 AND t.tgenabled <> 'D'"
            ),
            Some(0)
        );
    }

    #[pg_test]
    fn device_references_are_checked_per_statement() {
        let id = meter(1, "{}", &[(0, 1.0)]);
        let unknown = "00000000-0000-0000-0000-000000000999";
        let refused = failure(&format!(
            "INSERT INTO flux.mg_meter_readings (device_id, time) \
             VALUES ('{id}', '2024-01-02'), ('{unknown}', '2024-01-02')"
        ))
        .unwrap();
        assert!(refused.starts_with("23503"), "{refused}");
        assert!(
            refused.contains("mg_meter_readings_device_id_fkey"),
            "{refused}"
        );
        assert!(failure(&format!(
            "DELETE FROM flux.mg_device_registry WHERE id = '{id}'"
        ))
        .unwrap()
        .starts_with("23503"));
        assert!(failure(&format!(
            "UPDATE flux.mg_meter_readings SET device_id = '{unknown}' WHERE device_id = '{id}'"
        ))
        .unwrap()
        .starts_with("23503"));
        // Upserts check both their inserted and their updated rows.
        assert!(failure(&format!(
            "INSERT INTO flux.mg_meter_readings (device_id, time) VALUES ('{unknown}', '2024-01-01') \
             ON CONFLICT (device_id, time) DO NOTHING"
        ))
        .unwrap()
        .starts_with("23503"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM flux.mg_meter_readings"),
            Some(1)
        );
    }
}
