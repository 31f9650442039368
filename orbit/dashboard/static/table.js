// Sortable columns and a filter box for the dashboard's tables.
// Without scripts the filter box still works: it submits ?q= and the server filters.

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

function dataRows(table) {
  return [...table.tBodies[0].rows].filter((row) => !row.classList.contains("empty"));
}

function cellValue(row, index, kind) {
  const cell = row.cells[index];
  const raw = cell ? (cell.dataset.sortValue ?? cell.textContent.trim()) : "";
  if (kind === "number") {
    const value = Number.parseFloat(raw);
    return Number.isNaN(value) ? -Infinity : value;
  }
  return raw;
}

function sortBy(table, button) {
  const index = Number(button.dataset.sortColumn);
  const kind = button.dataset.sortKind;
  const header = button.closest("th");
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  for (const th of table.tHead.querySelectorAll("th")) th.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const rows = dataRows(table);
  rows.sort((a, b) => {
    const x = cellValue(a, index, kind);
    const y = cellValue(b, index, kind);
    const order = kind === "number" ? x - y : collator.compare(x, y);
    return ascending ? order : -order;
  });
  table.tBodies[0].append(...rows);
}

function rowText(row) {
  return [...row.cells]
    .filter((cell) => !cell.classList.contains("actions"))
    .map((cell) => cell.textContent)
    .join(" ")
    .toLowerCase();
}

function filterRows(table, text, counter) {
  const needle = text.trim().toLowerCase();
  const rows = dataRows(table);
  let shown = 0;
  for (const row of rows) {
    const match = needle === "" || rowText(row).includes(needle);
    row.hidden = !match;
    if (match) shown += 1;
  }
  if (counter) counter.textContent = needle ? `${shown} of ${rows.length} shown` : "";
}

for (const table of document.querySelectorAll("table[data-sortable]")) {
  table.tHead.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-sort-column]");
    if (button) sortBy(table, button);
  });
}

for (const input of document.querySelectorAll("input[data-filter-table]")) {
  const id = input.dataset.filterTable;
  const table = document.getElementById(id);
  const counter = document.querySelector(`[data-filter-count="${id}"]`);
  if (!table) continue;
  input.addEventListener("input", () => filterRows(table, input.value, counter));
  if (input.value) filterRows(table, input.value, counter);
}
