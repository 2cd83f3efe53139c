// Sort by a column (click its header again to reverse) and filter rows by their text.
const table = document.getElementById("units");
const body = table.tBodies[0];
let sorted = { column: -1, ascending: true };
table.tHead.addEventListener("click", (event) => {
  const header = event.target.closest("th");
  if (!header) return;
  const column = header.cellIndex;
  sorted = { column, ascending: sorted.column === column ? !sorted.ascending : true };
  const numeric = header.dataset.type === "number";
  const value = (row) => {
    const cell = row.cells[column];
    const raw = cell.dataset.order ?? cell.textContent.trim();
    return numeric || cell.dataset.order ? (raw === "" ? -Infinity : Number(raw)) : raw.toLowerCase();
  };
  const rows = [...body.rows].sort((a, b) => {
    const [x, y] = [value(a), value(b)];
    return (x < y ? -1 : x > y ? 1 : 0) * (sorted.ascending ? 1 : -1);
  });
  body.replaceChildren(...rows);
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", sorted.ascending ? "ascending" : "descending");
});
document.getElementById("filter").addEventListener("input", (event) => {
  const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of body.rows) {
    const text = row.textContent.toLowerCase();
    row.hidden = !words.every((w) => text.includes(w));
  }
});
