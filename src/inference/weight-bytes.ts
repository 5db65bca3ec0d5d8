// Bytes a weight matrix takes in the native addon's memory, format by format. The CPU kernels keep
// only a packed copy (addon/src/core/kernels_internal.h): panels of 16 rows, the last one padded with
// zero rows, and columns padded to a multiple of 4; int8 keeps one fp32 scale per row, int4 one
// fp32 scale per group of 32 columns (a row's short last group padded). The CUDA path stores bf16 or
// f16 without padding, which is the same size for every real model's shapes (multiples of 16).

import type { WeightFormat } from './dtype.js'

const PANEL_ROWS = 16
const COLUMN_ALIGNMENT = 4
const INT4_GROUP = 32
/** an int4 group of one row: 32 nibbles and a 4-byte scale */
const INT4_GROUP_BYTES = INT4_GROUP / 2 + 4

/** Bytes the addon holds for a [rows, cols] weight matrix stored in `format` (scales included). */
export function storedMatrixBytes (format: WeightFormat, rows: number, cols: number): number {
  const paddedRows = Math.ceil(rows / PANEL_ROWS) * PANEL_ROWS
  const paddedCols = Math.ceil(cols / COLUMN_ALIGNMENT) * COLUMN_ALIGNMENT
  switch (format) {
    case 'f32': return paddedRows * paddedCols * 4
    case 'bf16': case 'f16': return paddedRows * paddedCols * 2
    case 'int8': return paddedRows * (paddedCols + 4)
    case 'int4': return paddedRows * Math.ceil(cols / INT4_GROUP) * INT4_GROUP_BYTES
  }
}
