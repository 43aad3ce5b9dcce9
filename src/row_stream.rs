//! Streaming query results straight from the executor, for scans of millions of rows.
//!
//! `SPI_execute` and SPI cursors copy every result row into a tuple table before the caller
//! sees it. Here the executor hands each row to a `DestReceiver` of ours instead
//! (`SPI_execute_extended` with `dest`, PostgreSQL 14+): the callback reads the row's datums in
//! place, nothing is copied or kept, and returning `false` stops the scan early.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::ffi::CString;

/// A query parameter: its type and value.
pub struct Arg {
    oid: pg_sys::Oid,
    datum: Option<pg_sys::Datum>,
}

impl Arg {
    pub fn new<T: IntoDatum>(value: T) -> Arg {
        Arg {
            oid: T::type_oid(),
            datum: value.into_datum(),
        }
    }
}

#[repr(C)]
struct Receiver<'a> {
    /// Must be first: the executor calls us with a pointer to it.
    dest: pg_sys::DestReceiver,
    row: &'a mut dyn FnMut(&[pg_sys::Datum], &[bool]) -> bool,
}

/// Runs a read-only `query` with `args` ($1, $2, ...) inside the SPI connection `_connected` and
/// calls `row(values, nulls)` for each result row until it returns false. The slices are only
/// valid during the call.
pub fn for_each_row(
    _connected: &SpiClient<'_>,
    query: &str,
    args: &[Arg],
    row: &mut dyn FnMut(&[pg_sys::Datum], &[bool]) -> bool,
) {
    let query = CString::new(query).expect("queries have no NUL bytes");
    let mut receiver = Receiver {
        dest: pg_sys::DestReceiver {
            receiveSlot: Some(receive_slot),
            rStartup: Some(startup),
            rShutdown: Some(shutdown),
            rDestroy: Some(shutdown),
            mydest: pg_sys::CommandDest::DestNone,
        },
        row,
    };
    // The executor gets a pointer to the whole receiver (its first field is `dest`), so that
    // `receive_slot` may cast it back.
    let receiver: *mut Receiver = &mut receiver;
    // SAFETY: called inside an SPI connection (Spi::connect); the parameter list is allocated
    // in the current memory context and outlives the call; `receiver` outlives the execution.
    unsafe {
        let params = pg_sys::makeParamList(args.len() as i32);
        let slots = (*params).params.as_mut_slice(args.len());
        for (slot, arg) in slots.iter_mut().zip(args) {
            slot.value = arg.datum.unwrap_or(pg_sys::Datum::from(0));
            slot.isnull = arg.datum.is_none();
            slot.pflags = pg_sys::PARAM_FLAG_CONST as u16;
            slot.ptype = arg.oid;
        }
        let options = pg_sys::SPIExecuteOptions {
            params,
            read_only: true,
            dest: receiver.cast::<pg_sys::DestReceiver>(),
            ..Default::default()
        };
        let status = pg_sys::SPI_execute_extended(query.as_ptr(), &options);
        // A SELECT whose rows go to a receiver other than SPI's reports SPI_OK_UTILITY.
        assert!(
            status == pg_sys::SPI_OK_UTILITY as i32,
            "SPI_execute_extended returned {status}"
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn receive_slot(
    slot: *mut pg_sys::TupleTableSlot,
    dest: *mut pg_sys::DestReceiver,
) -> bool {
    let receiver = &mut *dest.cast::<Receiver>();
    let natts = (*(*slot).tts_tupleDescriptor).natts;
    if i32::from((*slot).tts_nvalid) < natts {
        pg_sys::slot_getsomeattrs_int(slot, natts);
    }
    let values = std::slice::from_raw_parts((*slot).tts_values, natts as usize);
    let nulls = std::slice::from_raw_parts((*slot).tts_isnull, natts as usize);
    (receiver.row)(values, nulls)
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(
    _dest: *mut pg_sys::DestReceiver,
    _operation: i32,
    _typeinfo: pg_sys::TupleDesc,
) {
}

#[pg_guard]
unsafe extern "C-unwind" fn shutdown(_dest: *mut pg_sys::DestReceiver) {}
