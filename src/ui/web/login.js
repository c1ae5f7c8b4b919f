"use strict";
(function () {
  var q = new URLSearchParams(location.search);
  if (q.get("error")) document.getElementById("error").hidden = false;
  var next = q.get("next");
  if (next && next.charAt(0) === "/" && next.charAt(1) !== "/") document.getElementById("next").value = next;
})();
