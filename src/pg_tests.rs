//! Tests of the SQL surface, run inside PostgreSQL by `cargo pgrx test`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn schema_has_documented_tables() {
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'flux' AND tablename IN \
             ('mg_device_registry','mg_bess_readings','mg_meter_readings','market_data')",
        );
        assert_eq!(n, Ok(Some(4)));
    }
}
