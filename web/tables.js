// tables.js — the data tables of the supervisor and admin pages.
//
// Each table sits in its own scroller (app.css .table-scroll): wider than its panel, it scrolls
// there, never the page. On a phone the tables reflow, one card per row, each figure under its
// column's heading (data-label, from the table's head); the explicit roles keep them tables to
// assistive technology when the CSS changes their display. A row and its cells get them when
// the row is made, never by going over the tables again on each refresh.

import { h } from "./dom.js";

const ROLE = { TABLE: "table", THEAD: "rowgroup", TBODY: "rowgroup", TR: "row", TD: "cell" };

export function scroller(table) {
  return h("div", { class: "table-scroll" }, table);
}

function withRole(el) {
  el.setAttribute("role", ROLE[el.tagName] || (el.getAttribute("scope") === "col" ? "columnheader" : "rowheader"));
  return el;
}

/** Gives a table just built (its head and bodies) its roles, and answers how to make its rows:
 *  `row(props, ...cells)` is a row with the roles, each of its data cells labelled with its
 *  column's heading (read from the head once, here; none for a visually hidden one: actions). */
export function reflowable(table) {
  for (const el of [table, ...table.querySelectorAll("thead, tbody, tr, th")]) withRole(el);
  const heads = [...table.tHead.rows[0].cells]
    .map((th) => (th.querySelector(".visually-hidden") ? "" : th.textContent.trim()));
  return (props, ...cells) => {
    cells.forEach((cell, i) => {
      withRole(cell);
      if (cell.tagName === "TD" && heads[i]) cell.dataset.label = heads[i];
    });
    return h("tr", { ...props, role: "row" }, cells);
  };
}
